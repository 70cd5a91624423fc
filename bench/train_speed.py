r"""Training speed of `fcn_jax.train.train_step` on this machine (steps/s, images/s).

Two cases, on synthetic random batches (no dataset needed):
  tiny     configs/tiny.py as it is (its widths, batch and crop);
  full128  configs/gopro.py (the published widths) at crop 128, batch 2.
Each step is the trainer's own: `train_step` from fcn_jax.train, jitted with the
state donated, as `train_and_evaluate` runs it (on one device, no sharding).
Compilation (lower + compile) and the first step are reported apart; the
speed is the median of --steps timed steps, each ended by block_until_ready.

  python bench/train_speed.py [--cases=tiny,full128] [--steps=5]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
import warnings
from typing import Optional, Sequence

import jax
import numpy as np

from configs import gopro
from configs import tiny
from fcn_jax import models
from fcn_jax import train
from fcn_jax import train_state
from fcn_jax.cpu import compiler_options


def _full128():
  config = gopro.get_config()
  config.batch_size = 2
  config.crop_size = 128
  return config


CASES = {'tiny': tiny.get_config, 'full128': _full128}


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def measure(config, steps: int, warmup: int, seed: int = 0) -> dict:
  """Compile time, first step and step times of the trainer's step for `config`."""
  model = models.model_from_config(config)
  tx = train.create_optimizer(config)
  lr_fn = train.create_learning_rate_fn(config)
  start = time.perf_counter()
  state = jax.block_until_ready(
    jax.jit(lambda r: train_state.create_train_state(r, model, tx, config))(
      jax.random.key(seed)
    )
  )
  init_s = time.perf_counter() - start
  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config.crop_size, config.crop_size, 3)
  batch = {
    'blur': jax.device_put(rng.random(shape, np.float32)),
    'sharp': jax.device_put(rng.random(shape, np.float32)),
  }
  step_fn = jax.jit(
    functools.partial(
      train.train_step,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=lr_fn,
    ),
    donate_argnums=(0,),
    compiler_options=compiler_options(),
  )
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  loss = float(metrics.compute()['loss'])
  n_params = sum(p.size for p in jax.tree.leaves(state.params['net']))
  return dict(
    init_s=init_s,
    compile_s=compile_s,
    first_s=times[0],
    times=times[warmup:],
    loss=loss,
    n_params=n_params,
  )


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--cases',
    default='tiny,full128',
    help=f'Comma-separated, from {sorted(CASES)}.',
  )
  parser.add_argument(
    '--steps', type=int, default=5, help='Timed steps per case.'
  )
  parser.add_argument(
    '--warmup',
    type=int,
    default=1,
    help='Untimed steps first (the first one is reported).',
  )
  args = parser.parse_args(argv)
  warnings.filterwarnings(
    'ignore', message='Some donated buffers were not usable'
  )

  load = os.getloadavg()
  print(
    f'{_cpu_model()}, {os.cpu_count()} logical CPUs; jax {jax.__version__} on '
    f'{jax.devices()[0].platform}; load average {load[0]:.2f} {load[1]:.2f} '
    f'{load[2]:.2f}',
    flush=True,
  )
  rows = []
  for name in args.cases.split(','):
    config = CASES[name]()
    r = measure(config, args.steps, args.warmup)
    median = statistics.median(r['times'])
    b, crop = config.batch_size, config.crop_size
    row = (
      f'| {name} | {config.model.n_feat}/{config.model.scale_unetfeats}/'
      f'{config.model.scale_orsnetfeats}/{config.model.num_cab} | '
      f'{r["n_params"] / 1e6:.2f} M | {b} | {crop} | {config.loss.trust} | '
      f'{r["compile_s"]:.1f} | {r["first_s"]:.2f} | {median:.3f} | '
      f'{1 / median:.3f} | {b / median:.2f} | {os.getloadavg()[0]:.2f} |'
    )
    rows.append(row)
    print(
      f'{name}: compile {r["compile_s"]:.1f} s (state init {r["init_s"]:.1f} s), '
      f'first step {r["first_s"]:.2f} s, median step {median:.3f} s over '
      f'{len(r["times"])} ({", ".join(f"{t:.3f}" for t in r["times"])}); '
      f'{1 / median:.3f} steps/s, {b / median:.2f} images/s; loss {r["loss"]:.4f}',
      flush=True,
    )
  load = os.getloadavg()
  print()
  print(
    '| case | n_feat/unet/orsnet/num_cab | parameters | batch | crop | trust | '
    'compile s | first step s | median step s | steps/s | images/s | load (1 min) |'
  )
  print('|---|---|---|---|---|---|---|---|---|---|---|---|')
  print('\n'.join(rows))
  print(f'\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')


if __name__ == '__main__':
  main()
