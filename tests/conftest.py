"""Shared fixtures: a tiny FCN whose compiled functions the tests reuse, a
checkpoint of it, and main.py run in a subprocess."""

import functools
import os
import subprocess
import sys

import jax
import pytest

from fcn_jax import checkpoint
from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def tiny_model():
  return FCN(**TINY)


@pytest.fixture(scope='session')
def tiny_params(tiny_model):
  return jax.jit(functools.partial(init_params, tiny_model))(jax.random.key(0))


@functools.lru_cache(maxsize=None)
def jitted_apply(model: FCN):
  """One jitted apply per model, so tests share compilations."""
  return jax.jit(model.apply)


@pytest.fixture(scope='session')
def tiny_checkpoint(tiny_params, tmp_path_factory) -> str:
  """A workdir holding `tiny_params` at step 0, as fcn_jax.convert writes it.

  Shared by the whole session: copy it before writing into it.
  """
  d = str(tmp_path_factory.mktemp('tiny_checkpoint'))
  mngr = checkpoint.make_manager(d)
  checkpoint.save(
    mngr,
    0,
    params=tiny_params,
    config={'model': dict(TINY, dtype='float32')},
    meta={},
  )
  mngr.wait_until_finished()
  mngr.close()
  return d


def _run_main(
  workdir,
  data_dir=None,
  *flags: str,
  config: str = 'configs/tiny.py',
  devices: int = 1,
  wait: bool = True,
):
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
  )
  cmd = [
    sys.executable,
    os.path.join(ROOT, 'main.py'),
    f'--config={config}',
    f'--workdir={workdir}',
    *([f'--config.data_dir={data_dir}'] if data_dir is not None else []),
    *flags,
  ]
  if wait:
    return subprocess.run(
      cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
  return subprocess.Popen(
    cmd,
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


@pytest.fixture(scope='session')
def run_main():
  """main.py in a subprocess on `devices` CPU devices, from the repository root.

  run_main(workdir, data_dir=None, *flags, config='configs/tiny.py',
  devices=1, wait=True) returns the finished CompletedProcess (stdout and
  stderr apart), or with wait=False the running Popen (both merged in stdout).
  """
  return _run_main


@pytest.fixture(scope='session')
def tiny_train_state():
  """The TrainState that configs/tiny.py starts training from (seed 0)."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fcn_jax import models  # pylint: disable=g-import-not-at-top
  from fcn_jax import train  # pylint: disable=g-import-not-at-top
  from fcn_jax import train_state  # pylint: disable=g-import-not-at-top

  config = tiny.get_config()
  model = models.model_from_config(config.to_dict())
  return jax.jit(
    lambda k: train_state.create_train_state(
      k, model, train.create_optimizer(config), config
    )
  )(jax.random.key(0))
