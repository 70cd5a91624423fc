"""The Flax FCN: shapes, output order, errors, size, resampling, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax.models import FCN
from fcn_jax.models import layers
from fcn_jax.models import presets
from fcn_jax.models.presets import TINY
from tests.conftest import jitted_apply


def _apply(model, params, x):
  return jitted_apply(model)({'params': params}, jnp.asarray(x))


@pytest.mark.parametrize('shape', [(1, 16, 16), (2, 24, 40), (1, 32, 8)])
def test_three_outputs_shaped_like_input(tiny_model, tiny_params, shape):
  x = np.random.default_rng(0).random(shape + (3,), np.float32)
  outs = _apply(tiny_model, tiny_params, x)
  assert len(outs) == 3
  for o in outs:
    assert o.shape == x.shape and o.dtype == jnp.float32
    assert np.isfinite(np.asarray(o)).all()


def test_output_order_is_final_stage2_stage1(tiny_model, tiny_params):
  # Each stage image is (its last conv) + input: zeroing that conv reveals it.
  x = np.random.default_rng(1).random((1, 16, 24, 3), np.float32)
  last_conv = {0: ('tail',), 1: ('msam23', 'conv2'), 2: ('msam12', 'conv2')}
  for index, path in last_conv.items():
    params = jax.tree_util.tree_map(lambda a: a, tiny_params)
    node = params
    for name in path:
      node = node[name]
    node['kernel'] = jnp.zeros_like(node['kernel'])
    outs = _apply(tiny_model, params, x)
    np.testing.assert_allclose(outs[index], x, atol=1e-6)
    for other in set(last_conv) - {index}:
      assert np.abs(np.asarray(outs[other]) - x).max() > 1e-3


@pytest.mark.parametrize(
  'shape,match',
  [
    ((1, 12, 16, 3), 'multiples of 8'),
    ((1, 16, 20, 3), 'multiples of 8'),
    ((1, 16, 16, 4), '3 channels'),
    ((16, 16, 3), '3 channels'),
  ],
)
def test_bad_shapes_raise_value_error(tiny_model, tiny_params, shape, match):
  with pytest.raises(ValueError, match=match):
    tiny_model.apply({'params': tiny_params}, jnp.zeros(shape))


def test_default_model_size():
  shapes = jax.eval_shape(
    FCN().init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
  )
  leaves = jax.tree_util.tree_flatten_with_path(shapes['params'])[0]
  sizes = {jax.tree_util.keystr(p): int(np.prod(s.shape)) for p, s in leaves}
  # The release counts 20,309,376 weights besides its one shared PReLU slope
  # (21,826,561 parameters minus stage1_decoder1's 1,517,185, which include
  # that slope); the forward pass uses both.
  assert sizes.pop("['prelu']") == 1
  assert sum(sizes.values()) == 20_309_376
  assert all(p.endswith("['kernel']") for p in sizes)  # no biases anywhere


def test_full_preset_is_the_default_model():
  assert {k: getattr(FCN(), k) for k in presets.FULL} == presets.FULL
  assert set(presets.PRESETS) == {'full', 'demo', 'tiny'}
  assert presets.PRESETS['full'] is presets.FULL


def test_resampling_known_values():
  x = jnp.arange(4.0).reshape(1, 1, 4, 1)
  up = layers.upsample2x(jnp.broadcast_to(x, (1, 2, 4, 1)))[0, 0, :, 0]
  np.testing.assert_allclose(up, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
  down = layers.downsample2x(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
  np.testing.assert_allclose(down, [[2.5, 4.5], [10.5, 12.5]])


def test_resampling_equals_torch_align_corners_false():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(2).random((2, 6, 10, 3), np.float32)
  t = torch.from_numpy(x.transpose(0, 3, 1, 2))
  for ours, scale in ((layers.upsample2x, 2.0), (layers.downsample2x, 0.5)):
    theirs = torch.nn.functional.interpolate(
      t, scale_factor=scale, mode='bilinear', align_corners=False
    )
    np.testing.assert_allclose(
      ours(jnp.asarray(x)), theirs.numpy().transpose(0, 2, 3, 1), atol=1e-6
    )
  # jax.image.resize antialiases when downsampling: not the release's resize.
  antialiased = jax.image.resize(jnp.asarray(x), (2, 3, 5, 3), 'linear')
  assert (
    np.abs(np.asarray(antialiased) - np.asarray(layers.downsample2x(x))).max()
    > 1e-3
  )


def test_images_in_a_batch_are_independent(tiny_model, tiny_params):
  x = np.random.default_rng(3).random((2, 16, 16, 3), np.float32)
  both = _apply(tiny_model, tiny_params, x)
  alone = _apply(tiny_model, tiny_params, x[1:])
  for b, a in zip(both, alone):
    np.testing.assert_allclose(b[1:], a, atol=1e-5)


def test_bfloat16_close_to_float32(tiny_params):
  x = np.random.default_rng(4).random((1, 32, 32, 3), np.float32)
  f32 = _apply(FCN(**TINY), tiny_params, x)[0]
  bf16 = _apply(FCN(**TINY, dtype='bfloat16'), tiny_params, x)[0]
  assert bf16.dtype == jnp.float32  # outputs are returned in float32
  peak = float(f32.max() - f32.min())
  mse = float(jnp.mean((bf16 - f32) ** 2))
  assert mse > 0  # the computation really ran in bfloat16
  assert 10 * np.log10(peak**2 / mse) > 40


@pytest.mark.slow
def test_remat_keeps_gradients(tiny_params):
  x = jnp.asarray(np.random.default_rng(5).random((1, 16, 16, 3), np.float32))

  def grads(model):
    loss = lambda p: sum(jnp.mean(o) for o in model.apply({'params': p}, x))
    return jax.jit(jax.grad(loss))(tiny_params)

  plain, remat = grads(FCN(**TINY)), grads(FCN(**TINY, remat=(0, 1, 2, 3)))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_spatial_mean_is_the_mean_over_height_and_width():
  x = jnp.asarray(np.random.default_rng(0).random((2, 40, 24, 5), np.float32))
  y = layers._spatial_mean(x.astype(jnp.bfloat16))
  assert y.shape == (2, 1, 1, 5) and y.dtype == jnp.float32
  np.testing.assert_allclose(
    layers._spatial_mean(x), x.mean(axis=(1, 2), keepdims=True), rtol=1e-6
  )
  np.testing.assert_allclose(y, x.mean(axis=(1, 2), keepdims=True), atol=4e-3)
