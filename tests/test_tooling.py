"""fcn_jax.tooling: the persistent compilation cache and --profile_steps traces."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from fcn_jax import tooling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMPILE_TINY_STEP = """
import functools, sys, time
import jax
from bench import reference
from fcn_jax import models, tooling, train, train_state
from fcn_jax.models import presets
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
print('cache', tooling.enable_compilation_cache(sys.argv[1]))
config = reference.release_config(presets.TINY)
model, tx = models.model_from_config(config), train.create_optimizer(config)
state = jax.eval_shape(lambda r: train_state.create_train_state(r, model, tx, config), jax.random.key(0))
batch = {k: jax.ShapeDtypeStruct((1, 32, 32, 3), 'float32') for k in ('blur', 'sharp')}
step = functools.partial(train.train_step, model=model, tx=tx, config=config,
                         learning_rate_fn=train.create_learning_rate_fn(config))
start = time.perf_counter()
jax.jit(step).lower(state, batch).compile()
print('compile_s', time.perf_counter() - start)
"""


def compile_in_fresh_process(workdir):
  proc = subprocess.run(
    [sys.executable, '-c', textwrap.dedent(COMPILE_TINY_STEP), str(workdir)],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT),
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return float(proc.stdout.split('compile_s')[1])


@pytest.mark.slow
def test_second_run_loads_the_tiny_train_step_from_the_cache(tmp_path):
  cache = tmp_path / 'compilation_cache'
  first = compile_in_fresh_process(tmp_path)
  entries = sorted(os.listdir(cache))
  assert entries  # the workdir's cache holds the compiled step
  second = compile_in_fresh_process(tmp_path)
  assert sorted(os.listdir(cache)) == entries  # a hit: nothing new written
  assert second < first, (first, second)
  print(f'tiny train step compile: first {first:.2f} s, second {second:.2f} s')


def test_an_explicit_cache_dir_is_kept(tmp_path, monkeypatch):
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'mine'))
  try:
    assert tooling.enable_compilation_cache(str(tmp_path)) == str(
      tmp_path / 'mine'
    )
  finally:
    jax.config.update('jax_compilation_cache_dir', None)


@pytest.mark.parametrize('text', ['3', '0:2', '4:2', 'a:b'])
def test_bad_profile_steps_name_the_flag(text):
  with pytest.raises(ValueError, match='--profile_steps'):
    tooling.parse_steps(text)


def test_profile_steps_write_a_trace(tmp_path):
  step = jax.jit(lambda x: jnp.tanh(x @ x))
  x = jnp.ones((64, 64))
  profiler = tooling.StepProfiler(str(tmp_path), '2:3', start_step=0)
  for i in range(1, 6):
    x = step(x)
    profiler(i, x)
    assert profiler.active == (i == 1 or i == 2)
  profiler.close()
  traces = list((tmp_path / 'plugins' / 'profile').rglob('*.xplane.pb'))
  assert traces and traces[0].stat().st_size > 0
