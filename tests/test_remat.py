"""Rematerialisation and precision: same values, fewer saved residuals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import memory
from fcn_jax.models import FCN
from fcn_jax.models.presets import TINY

X = np.random.default_rng(5).random((1, 16, 16, 3), np.float32)


def _loss(model):
  def loss(p, x):
    return sum(jnp.mean(o * o) for o in model.apply({'params': p}, x))

  return loss


@pytest.mark.parametrize(
  'granularity, policy',
  [
    ('level', 'nothing_saveable'),
    ('block', 'conv_saveable'),
  ],
)
@pytest.mark.slow
def test_remat_keeps_outputs_and_gradients(tiny_params, granularity, policy):
  plain = FCN(**TINY)
  remat = FCN(
    **TINY,
    remat=(0, 1, 2, 3),
    remat_granularity=granularity,
    remat_policy=policy,
  )
  x = jnp.asarray(X)
  for a, b in zip(
    plain.apply({'params': tiny_params}, x),
    remat.apply({'params': tiny_params}, x),
  ):
    np.testing.assert_array_equal(a, b)
  ga = jax.jit(jax.grad(_loss(plain)))(tiny_params, x)
  gb = jax.jit(jax.grad(_loss(remat)))(tiny_params, x)
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _saved_bytes(model, params) -> int:
  return memory.saved_residual_bytes(model, params, (1, 16, 16, 3))


def test_finer_remat_saves_fewer_residuals(tiny_params):
  sizes = {
    g: _saved_bytes(
      FCN(**TINY, remat=(0, 1, 2, 3), remat_granularity=g), tiny_params
    )
    for g in ('stage', 'level', 'block')
  }
  none = _saved_bytes(FCN(**TINY), tiny_params)
  assert sizes['stage'] < none and sizes['block'] < none
  assert sizes['level'] < none
  conv = _saved_bytes(
    FCN(
      **TINY,
      remat=(0, 1, 2, 3),
      remat_granularity='block',
      remat_policy='conv_saveable',
    ),
    tiny_params,
  )
  assert sizes['block'] < conv <= none


def test_stage_images_add_their_residual_in_float32(tiny_params):
  x = jnp.asarray(X)
  bf16 = FCN(**TINY, dtype='bfloat16')
  jaxpr = jax.make_jaxpr(lambda p: bf16.apply({'params': p}, x))(tiny_params)
  outvars = set(jaxpr.jaxpr.outvars)
  adds = [
    e
    for e in jaxpr.eqns
    if e.primitive.name == 'add' and e.outvars[0] in outvars
  ]
  assert len(adds) == 2  # tail(y) + x and SAM's conv(x) + x_img of stage 2
  for e in adds:
    assert [v.aval.dtype for v in e.invars] == [jnp.float32] * 2
  outs = bf16.apply({'params': tiny_params}, x)
  assert all(o.dtype == jnp.float32 for o in outs)
  # Added in float32, the stage images are off the bfloat16 grid.
  for o in outs[:2]:
    rounded = o.astype(jnp.bfloat16).astype(jnp.float32)
    assert not np.array_equal(np.asarray(rounded), np.asarray(o))


@pytest.mark.slow
def test_start_up_refuses_a_batch_that_does_not_fit():
  from configs import tiny
  from fcn_jax import train

  config = tiny.get_config()
  config.crop_size, config.batch_size = 16, 2
  config.eval_image_size = (16, 16)
  config.device_memory_bytes = 2**16  # 64 KiB: far too small
  with pytest.raises(train.ConfigError, match=r'batch_size=2 .* needs .* GiB'):
    train.check_config(config, 1)
  config.device_memory_bytes = 2**34  # 16 GiB: fits
  train.check_config(config, 1)
