"""Tests of fcn_jax.inference: padding, ensemble, tiling, TLC, Deblurrer.

Most tests use test doubles (parameter-free modules whose output is known);
the few that run FCN share one tiny model and one 16x16 compiled shape.
"""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage

from fcn_jax import image_io
from fcn_jax import inference
from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY

TRACES = collections.Counter()


class Pointwise(nn.Module):
  """A pixelwise function: equivariant to every geometric transform."""

  tag: str = ''

  def __call__(self, x):
    TRACES[self.tag] += 1
    y = 1.2 * x * x - 0.1
    return [y, x, x]


class SymmetricBlur(nn.Module):
  """A 3x3 binomial blur with zero padding: equivariant to flips and transposes."""

  def __call__(self, x):
    k = (0.25, 0.5, 0.25)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = sum(k[i] * x[:, i : x.shape[1] - 2 + i] for i in range(3))
    x = sum(k[i] * x[:, :, i : x.shape[2] - 2 + i] for i in range(3))
    return [x]


class PositionBias(nn.Module):
  """Adds a ramp along rows and columns: not equivariant, the result is known."""

  def __call__(self, x):
    return [x + bias(x.shape[1], x.shape[2])[None, :, :, None]]


class TileMean(nn.Module):
  """Every pixel becomes the image mean: a global statistic, like channel attention."""

  def __call__(self, x):
    return [jnp.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)]


def bias(h, w):
  return 0.01 * jnp.arange(h)[:, None] + 0.002 * jnp.arange(w)[None, :]


def images(*shape, seed=0):
  return np.random.default_rng(seed).random(shape, np.float32)


@pytest.fixture(scope='module')
def fcn():
  model = FCN(**TINY)
  params = jax.jit(lambda rng: init_params(model, rng, (1, 16, 16, 3)))(
    jax.random.key(0)
  )
  raw = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
  return model, params, raw


@pytest.fixture(scope='module')
def blurry():
  return images(1, 13, 11, 3)  # reflect-pads to 16 x 16


def test_pad_to_multiple_is_reflect():
  x = images(2, 5, 3, 1)
  padded = inference.pad_to_multiple(x)
  assert padded.shape == (2, 8, 8, 1) and isinstance(padded, np.ndarray)
  np.testing.assert_array_equal(padded[:, :5, :3], x)
  np.testing.assert_array_equal(
    padded[:, 5:, :3], x[:, 3:0:-1]
  )  # no edge repeat
  np.testing.assert_array_equal(padded[:, :5, 3:5], x[:, :, 1::-1])
  np.testing.assert_array_equal(
    padded, np.pad(x, ((0, 0), (0, 3), (0, 5), (0, 0)), mode='reflect')
  )
  np.testing.assert_array_equal(
    inference.pad_to_multiple(jnp.asarray(x)), padded
  )
  assert inference.pad_to_multiple(x[0]).shape == (8, 8, 1)  # HWC
  assert inference.pad_to_multiple(padded) is padded


class WideConv(nn.Module):
  """One 96-channel 3x3 convolution: XLA:CPU would put it in a YNNPACK fusion."""

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(96, (3, 3), use_bias=False)(jnp.tile(x, (1, 1, 1, 32)))
    return [jnp.tanh(y[..., :3]), x, x]


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU options')
@pytest.mark.parametrize('tiled', [False, True])
def test_restore_compiles_with_the_model_compiler_options(tiled):
  x = images(1, 48, 48, 3)
  model = WideConv()
  params = model.init(jax.random.key(0), x)
  if tiled:
    lowered = inference._restore_tiled_jit().lower(
      model, params['params'], x, tile=32, overlap=8
    )
  else:
    lowered = inference._restore_jit().lower(model, params['params'], x)
  text = lowered.compile().as_text()
  assert 'convolution(' in text and 'ynn_fusion' not in text


@pytest.mark.parametrize('h,w', [(1, 1), (7, 9), (8, 8), (17, 3)])
def test_restore_any_size(h, w):
  x = images(2, h, w, 3)
  y = inference._restore_jit()(Pointwise(), {}, x)
  assert y.shape == (2, h, w, 3) and y.dtype == jnp.float32
  np.testing.assert_allclose(y, np.clip(1.2 * x * x - 0.1, 0, 1), atol=1e-6)


def test_deblurrer_runs_fcn_on_the_reflect_padded_image(fcn, blurry):
  model, params, raw = fcn
  y = inference.Deblurrer(model, params)(blurry[0])
  assert y.shape == blurry.shape[1:] and y.dtype == np.float32
  expected = np.clip(raw(params, inference.pad_to_multiple(blurry)), 0, 1)
  np.testing.assert_allclose(y, expected[0, :13, :11], atol=1e-6)


@pytest.mark.parametrize('shape', [(1, 13, 11, 3), (2, 13, 21, 3)])
def test_ensemble_of_equivariant_model_is_plain(shape):
  x = images(*shape)
  for model in (Pointwise(), SymmetricBlur()):
    plain = inference._restore_jit()(model, {}, x)
    ensemble = inference._restore_jit()(model, {}, x, ensemble=True)
    np.testing.assert_allclose(ensemble, plain, atol=1e-6)


def dihedral_np():
  """(forward, inverse) for the 8 symmetries of the square, from np.rot90."""
  pairs = []
  for k in range(4):
    for flip in (False, True):

      def fwd(v, k=k, flip=flip):
        return np.rot90(v[:, :, ::-1] if flip else v, k, (1, 2))

      def inv(v, k=k, flip=flip):
        v = np.rot90(v, -k, (1, 2))
        return v[:, :, ::-1] if flip else v

      pairs.append((fwd, inv))
  return pairs


def test_ensemble_maps_each_output_back():
  x = images(1, 16, 24, 3) * 0.5
  expected = np.mean(
    [
      inv(np.asarray(PositionBias().apply({}, fwd(x).copy())[0]))
      for fwd, inv in dihedral_np()
    ],
    axis=0,
  )
  ensemble = inference._restore_jit()(PositionBias(), {}, x, ensemble=True)
  np.testing.assert_allclose(ensemble, expected, atol=1e-6)
  assert not np.allclose(
    ensemble, inference._restore_jit()(PositionBias(), {}, x)
  )


def test_ensemble_fcn_is_the_mean_of_eight_runs(fcn, blurry):
  model, params, raw = fcn
  padded = inference.pad_to_multiple(blurry)
  runs = [
    inv(np.asarray(raw(params, fwd(padded).copy())))
    for fwd, inv in dihedral_np()
  ]
  expected = np.clip(np.mean(runs, axis=0), 0, 1)[:, :13, :11]
  ensemble = np.asarray(
    inference._restore_jit()(model, params, blurry, ensemble=True)
  )
  np.testing.assert_allclose(ensemble, expected, atol=1e-5)
  plain = np.asarray(inference._restore_jit()(model, params, blurry))
  assert (
    ensemble.shape == plain.shape and 0 <= ensemble.min() <= ensemble.max() <= 1
  )
  assert 1e-4 < np.abs(ensemble - plain).max() < 0.5


def test_tile_covering_the_image_equals_whole_image(fcn, blurry):
  model, params, _ = fcn
  whole = inference._restore_jit()(model, params, blurry)
  tiled = inference._restore_tiled_jit()(
    model, params, blurry, tile=32, overlap=8
  )
  np.testing.assert_allclose(tiled, whole, atol=1e-6)


@pytest.mark.parametrize(
  'overlap,ensemble', [(0, False), (4, False), (8, True)]
)
def test_tiles_of_pointwise_model_are_seamless(overlap, ensemble):
  x = images(1, 37, 53, 3)  # pads to 40 x 56: 3+ tiles of 16 each way
  tiled = inference._restore_tiled_jit()(
    Pointwise(), {}, x, tile=16, overlap=overlap, ensemble=ensemble
  )
  np.testing.assert_allclose(
    tiled, inference._restore_jit()(Pointwise(), {}, x), atol=1e-6
  )


def test_tile_seams_are_blended():
  # A ramp image: each tile's mean differs, so hard seams would jump.
  x = np.broadcast_to(
    np.linspace(0, 1, 64, dtype=np.float32)[None, None, :, None], (1, 16, 64, 3)
  )

  def largest_step(overlap):
    y = np.asarray(
      inference.restore_tiled(TileMean(), {}, x, tile=16, overlap=overlap)
    )
    return np.abs(np.diff(y[0, 0, :, 0])).max()

  assert largest_step(8) < 0.3 * largest_step(0)


def test_tile_layout_covers_with_overlap():
  for size, tile, overlap in [
    (40, 16, 4),
    (48, 16, 8),
    (1000, 512, 32),
    (24, 16, 0),
  ]:
    starts, weights = inference.tile_layout(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == size
    assert (np.diff(starts) <= tile - overlap).all() and (weights > 0).all()
    n = np.ceil((size - overlap) / (tile - overlap))
    assert len(starts) == n and weights.shape == (n, tile)
  starts, weights = inference.tile_layout(16, 32, 8)
  assert (
    starts.tolist() == [0] and weights.shape == (1, 16) and (weights == 1).all()
  )


@pytest.mark.parametrize('tile,overlap', [(12, 2), (0, 0), (16, 16), (16, -1)])
def test_bad_tiling_is_refused(tile, overlap):
  with pytest.raises(ValueError):
    inference.check_tiling(tile, overlap)
  with pytest.raises(ValueError):
    inference.Deblurrer(Pointwise(), {}, tile=tile, overlap=overlap)


def test_tlc_with_train_size_at_least_the_image_is_global_pooling(fcn):
  model, params, raw = fcn
  x = images(1, 16, 16, 3)
  tlc = jax.jit(
    lambda p, v: model.clone(tlc_train_size=16).apply({'params': p}, v)[0]
  )
  np.testing.assert_allclose(tlc(params, x), raw(params, x), atol=1e-6)
  deblurrer = inference.Deblurrer(model, params, tlc_train_size=256)
  assert deblurrer.model.tlc_train_size == 256 and model.tlc_train_size is None


def test_deblurrer_compiles_once_per_padded_size():
  deblurrer = inference.Deblurrer(Pointwise(tag='compiles'), {})
  for h, w in [(13, 11), (16, 16), (9, 15), (16, 9)]:
    assert deblurrer(images(h, w, 3)).shape == (h, w, 3)
  assert TRACES['compiles'] == 1
  deblurrer(images(17, 16, 3))
  assert TRACES['compiles'] == 2
  tiled = inference.Deblurrer(Pointwise(tag='tiled'), {}, tile=8, overlap=2)
  for h, w in [(13, 11), (16, 16), (9, 15)]:
    tiled(images(h, w, 3))
  assert TRACES['tiled'] == 1


class Identity(nn.Module):
  def __call__(self, x):
    return [x]


def test_deblurrer_input_kinds():
  deblur = inference.Deblurrer(Identity(), {})
  rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
  np.testing.assert_array_equal(deblur(rgb), rgb)
  gray = rgb[:, :, 0]
  np.testing.assert_array_equal(deblur(gray), np.repeat(gray[:, :, None], 3, 2))
  np.testing.assert_array_equal(deblur(gray[:, :, None]), deblur(gray))
  rgba = np.concatenate([rgb, np.zeros_like(gray)[:, :, None]], axis=2)
  np.testing.assert_array_equal(deblur(rgba), rgb)
  sixteen = rgb.astype(np.uint16) * 257  # 8-bit values at 16 bits
  out = deblur(sixteen)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, rgb)
  floats = deblur(rgb / 255.0)
  assert floats.dtype == np.float32 and floats.shape == (5, 7, 3)
  np.testing.assert_allclose(floats, rgb / 255.0, atol=1e-6)
  with pytest.raises(TypeError):
    deblur(rgb.astype(np.int32))
  with pytest.raises(ValueError):
    deblur(np.zeros((4, 4, 5), np.uint8))


def test_to_uint8_rounds_like_img_as_ubyte():
  x = np.concatenate(
    [
      np.arange(256, dtype=np.float32) / 255,
      (np.arange(255, dtype=np.float32) + 0.5) / 255,
      np.random.default_rng(0).random(1000, np.float32),
    ]
  )
  np.testing.assert_array_equal(image_io.to_uint8(x), skimage.img_as_ubyte(x))
  np.testing.assert_array_equal(
    image_io.to_uint8(np.array([-0.5, 1.5])), [0, 255]
  )


def test_bucket_crops_back_exactly():
  # Position-dependent but size-independent models: bucketing must change
  # nothing (no shift, no resampling), however much padding it adds.
  for model in (Pointwise(), PositionBias()):
    exact = inference.Deblurrer(model, {})
    for h, w in [(13, 11), (8, 40), (33, 5)]:
      x = images(h, w, 3, seed=h)
      for bucket in (16, 64):
        np.testing.assert_array_equal(
          inference.Deblurrer(model, {}, bucket=bucket)(x), exact(x)
        )


def test_bucket_compiles_once_per_bucket():
  deblurrer = inference.Deblurrer(Pointwise(tag='bucket'), {}, bucket=32)
  for h, w in [(13, 11), (30, 17), (32, 32), (9, 31)]:
    assert deblurrer(images(h, w, 3)).shape == (h, w, 3)
  assert TRACES['bucket'] == 1
  assert [shape for shape, _ in deblurrer.compilations] == [(1, 32, 32, 3)]
  deblurrer(images(33, 5, 3))
  assert TRACES['bucket'] == 2
  assert deblurrer.compilations[1][0] == (1, 64, 32, 3)
  again = inference.Deblurrer(Pointwise(tag='bucket'), {}, bucket=32)
  again(images(20, 20, 3))
  assert again.compilations == [] and TRACES['bucket'] == 2  # shared
  with pytest.raises(ValueError, match='bucket'):
    inference.Deblurrer(Pointwise(), {}, bucket=12)


def test_bucketed_fcn_is_fcn_on_the_bigger_padding(fcn, blurry):
  # FCN splits the padded image into strips, quarters and halves and pools
  # over whole maps, so a bigger padding changes its result a little: the
  # bucketed output is FCN on the image reflect-padded to the bucket, cropped.
  model, params, raw = fcn
  bucketed = inference.Deblurrer(model, params, bucket=32)(blurry[0])
  padded = inference.pad_to_multiple(blurry, 32)
  assert padded.shape == (1, 32, 32, 3)
  np.testing.assert_allclose(
    bucketed, np.clip(raw(params, padded), 0, 1)[0, :13, :11], atol=1e-6
  )
  exact = inference.Deblurrer(model, params)(blurry[0])
  assert 1e-5 < np.abs(bucketed - exact).max()
