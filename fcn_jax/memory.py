"""What the train and eval steps need in device memory, from XLA's own analyses.

Two figures, both computed without allocating anything:

* saved residuals: the activations the backward pass keeps, from tracing the
  loss's VJP (`jax.ad_checkpoint`; the same on every backend), per image.
* the compiled step's plan: `jit(...).lower(...).compile().memory_analysis()`,
  XLA's buffer assignment for the current backend: arguments + outputs +
  temporaries - aliased (the donated state is reused), and XLA's own peak.

`check_memory` refuses, at start-up, a per-device train or eval batch whose
compiled step does not fit the device's memory.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

# Overrides the device's memory (bytes) for `check_memory`, e.g. on CPU.
MEMORY_ENV = 'FCN_JAX_DEVICE_MEMORY'
# Share of the device memory a step may plan for (XLA needs some headroom).
HEADROOM = 0.95


def _plan(compiled) -> dict[str, int]:
  stats = compiled.memory_analysis()
  sizes = {
    'arguments': stats.argument_size_in_bytes,
    'outputs': stats.output_size_in_bytes,
    'temporaries': stats.temp_size_in_bytes,
    'aliased': stats.alias_size_in_bytes,
  }
  sizes['total'] = (
    sizes['arguments']
    + sizes['outputs']
    + sizes['temporaries']
    - sizes['aliased']
  )
  sizes['peak'] = getattr(stats, 'peak_memory_in_bytes', 0) or sizes['total']
  return sizes


def _abstract_state(config):
  from fcn_jax import models
  from fcn_jax import train
  from fcn_jax import train_state

  model = models.model_from_config(config)
  tx = train.create_optimizer(config)
  state = jax.eval_shape(
    lambda r: train_state.create_train_state(r, model, tx, config),
    jax.random.key(0),
  )
  return model, tx, state


def lower_train_step(
  config, batch_size: int, crop: Optional[int] = None, **lower_kwargs
):
  """The trainer's jitted train step lowered for a per-device batch."""
  from fcn_jax import train
  from fcn_jax.cpu import compiler_options

  model, tx, state = _abstract_state(config)
  crop = crop or config.crop_size
  batch = {
    k: jax.ShapeDtypeStruct((batch_size, crop, crop, 3), jnp.uint8)
    for k in ('blur', 'sharp')
  }
  step = functools.partial(
    train.train_step,
    model=model,
    tx=tx,
    config=config,
    learning_rate_fn=train.create_learning_rate_fn(config),
  )
  if lower_kwargs:  # cross-platform lowering: no backend options
    return (
      jax.jit(step, donate_argnums=(0,))
      .trace(state, batch)
      .lower(**lower_kwargs)
    )
  jitted = jax.jit(
    step, donate_argnums=(0,), compiler_options=compiler_options()
  )
  return jitted.lower(state, batch)


def lower_eval_step(
  config, batch_size: int, image_size: Sequence[int], **lower_kwargs
):
  """The network's forward pass (what evaluation runs) on a per-device batch."""
  from fcn_jax.cpu import compiler_options

  model, _, state = _abstract_state(config)
  h, w = (int(s) for s in image_size)
  x = jax.ShapeDtypeStruct((batch_size, h, w, 3), jnp.float32)

  def step(params, x):
    return model.apply({'params': params['net']}, x)[0]

  if lower_kwargs:
    return jax.jit(step).trace(state.params, x).lower(**lower_kwargs)
  jitted = jax.jit(step, compiler_options=compiler_options())
  return jitted.lower(state.params, x)


def train_step_memory(
  config, batch_size: int, crop: Optional[int] = None
) -> dict[str, int]:
  """Bytes of the compiled train step of `config` at a per-device batch."""
  return _plan(lower_train_step(config, batch_size, crop).compile())


def eval_step_memory(
  config, batch_size: int, image_size: Sequence[int]
) -> dict[str, int]:
  """Bytes of the compiled forward pass at a per-device eval batch."""
  return _plan(lower_eval_step(config, batch_size, image_size).compile())


def saved_residual_bytes(
  model: Any, params: Any, image_shape: Sequence[int]
) -> int:
  """Bytes the backward pass of `model` keeps, arguments excluded.

  `params` may be arrays or `jax.ShapeDtypeStruct`s; nothing is computed.
  """
  from jax._src.ad_checkpoint import saved_residuals

  x = jax.ShapeDtypeStruct(tuple(image_shape), jnp.float32)

  def loss(p, x):
    return sum(jnp.mean(o) for o in model.apply({'params': p}, x))

  params = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params
  )
  total = 0
  for aval, why in saved_residuals(loss, params, x):
    if 'argument' not in why:
      total += aval.size * aval.dtype.itemsize
  return total


def device_memory(config=None) -> Optional[int]:
  """Bytes of one device's memory: config, then $FCN_JAX_DEVICE_MEMORY, then
  the device's `memory_stats()['bytes_limit']`; None where unknown (CPU)."""
  limit = None if config is None else config.get('device_memory_bytes')
  if limit:
    return int(limit)
  if os.environ.get(MEMORY_ENV):
    return int(float(os.environ[MEMORY_ENV]))
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return None
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001 - some backends do not implement it
    return None
  return stats.get('bytes_limit')


def _gib(n: float) -> str:
  return f'{n / 2**30:.2f} GiB'


def largest_fitting_batch(fits, upper: int) -> int:
  """The largest b in [0, upper] with fits(b) (fits is monotone), by bisection."""
  lo, hi = 0, upper
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if fits(mid):
      lo = mid
    else:
      hi = mid - 1
  return lo


def check_memory(config, num_devices: int) -> None:
  """Raise ValueError (one line) if a per-device batch will not fit the device.

  Skipped where the device memory is unknown (CPU without a limit given) or
  `config.check_memory` is False.
  """
  if not config.get('check_memory', True):
    return
  limit = device_memory(config)
  if not limit:
    return
  budget = HEADROOM * limit
  train_batch = config.batch_size // num_devices
  plan = train_step_memory(config, train_batch)
  if plan['total'] > budget:
    fit = largest_fitting_batch(
      lambda b: train_step_memory(config, b)['total'] <= budget,
      train_batch - 1,
    )
    hint = (
      f'per-device batch {fit} fits' if fit else 'no batch fits at this crop'
    )
    raise ValueError(
      f'config.batch_size={config.batch_size} ({train_batch} per device, crop'
      f' {config.crop_size}, dtype {config.model.dtype}, remat'
      f' {tuple(config.model.remat)} {config.model.remat_granularity}) needs'
      f' {_gib(plan["total"])} per device, the device has {_gib(limit)}:'
      f' {hint}; or set config.model.dtype=bfloat16 /'
      ' config.model.remat=(0, 1, 2, 3) with remat_granularity=block'
    )
  eval_batch = config.eval_batch_size // num_devices
  size = tuple(config.get('eval_image_size', (720, 1280)))
  plan = eval_step_memory(config, eval_batch, size)
  if plan['total'] > budget:
    fit = largest_fitting_batch(
      lambda b: eval_step_memory(config, b, size)['total'] <= budget,
      eval_batch - 1,
    )
    raise ValueError(
      f'config.eval_batch_size={config.eval_batch_size} ({eval_batch} per'
      f' device at {size[0]}x{size[1]}) needs {_gib(plan["total"])} per'
      f' device, the device has {_gib(limit)}: per-device eval batch {fit}'
      f' fits (config.eval_batch_size={fit * num_devices})'
    )
