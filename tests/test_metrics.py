"""Tests for fcn_jax.metrics: parity with skimage and a float64 MATLAB model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage import data, metrics as skmetrics, transform, util

from fcn_jax import metrics

_CROP = (72, 140)  # 3 strips of 64 columns, the last one partial.
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _degrade(
  sharp: np.ndarray, kind: str, rng: np.random.Generator
) -> np.ndarray:
  s = sharp.astype(np.float64)
  if kind == 'gaussian':
    d = ndimage.gaussian_filter(s, (2.0, 2.0, 0))
  elif kind == 'motion':  # 9-pixel diagonal line kernel
    line = np.eye(9)[:, :, None] / 9.0
    d = ndimage.convolve(s, line, mode='nearest')
  elif kind == 'noise':
    d = s + rng.normal(0.0, 8.0, s.shape)
  elif kind == 'jpeg_like':  # down-up sampling, then coarse level quantization
    h, w, _ = s.shape
    small = transform.resize(
      s, (h // 3, w // 3), order=1, anti_aliasing=True, preserve_range=True
    )
    d = transform.resize(small, (h, w), order=1, preserve_range=True)
    d = np.floor(d / 8.0) * 8.0 + 4.0
  else:
    raise ValueError(kind)
  return _to_uint8(d)


@functools.lru_cache(maxsize=None)
def _pairs() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(sharp, degraded, names) uint8 batches of real photographs."""
  rng = np.random.default_rng(0)
  h, w = _CROP
  photos = {
    'astronaut': data.astronaut()[60 : 60 + h, 150 : 150 + w],
    'chelsea': data.chelsea()[80 : 80 + h, 100 : 100 + w],
    'coffee': data.coffee()[150 : 150 + h, 200 : 200 + w],
  }
  sharp, degraded, names = [], [], []
  for photo_name, photo in photos.items():
    for kind in ('gaussian', 'motion', 'noise', 'jpeg_like'):
      sharp.append(photo)
      degraded.append(_degrade(photo, kind, rng))
      names.append(f'{photo_name}/{kind}')
  return np.stack(sharp), np.stack(degraded), tuple(names)


@functools.lru_cache(maxsize=None)
def _batch_metrics() -> dict[str, np.ndarray]:
  sharp, degraded, _ = _pairs()
  return {
    k: np.asarray(v) for k, v in metrics.image_metrics(sharp, degraded).items()
  }


def _gaussian_3d(sigma: float = 1.5, size: int = 11) -> np.ndarray:
  """MATLAB's cubic Gaussian window (imgaussfilt3 / fspecial3), sum 1."""
  t = np.arange(size) - (size - 1) / 2
  z, y, x = np.meshgrid(t, t, t, indexing='ij')
  k = np.exp(-(x * x + y * y + z * z) / (2 * sigma * sigma))
  return k / k.sum()


def _ssim_matlab_reference(a: np.ndarray, b: np.ndarray) -> float:
  """MATLAB ssim() on an H x W x 3 uint8 volume, in float64 with scipy."""
  a = a.astype(np.float64)
  b = b.astype(np.float64)
  window = _gaussian_3d()
  blur = lambda v: ndimage.correlate(v, window, mode='nearest')  # replicate
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a * mu_a
  var_b = blur(b * b) - mu_b * mu_b
  cov = blur(a * b) - mu_a * mu_b
  ssim_map = (
    (2 * mu_a * mu_b + _C1)
    * (2 * cov + _C2)
    / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))
  )
  return float(ssim_map.mean())


def _ssim_skimage(a: np.ndarray, b: np.ndarray) -> float:
  return float(
    skmetrics.structural_similarity(
      a,
      b,
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
      channel_axis=-1,
      data_range=255,
    )
  )


def test_psnr_matches_skimage():
  sharp, degraded, _ = _pairs()
  ours = _batch_metrics()['psnr']
  ref = [
    skmetrics.peak_signal_noise_ratio(a, b, data_range=255)
    for a, b in zip(sharp, degraded)
  ]
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_ssim_per_channel_matches_skimage():
  sharp, degraded, _ = _pairs()
  ours = _batch_metrics()['ssim_per_channel']
  ref = [_ssim_skimage(a, b) for a, b in zip(sharp, degraded)]
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_ssim_matlab_matches_3d_reference():
  sharp, degraded, _ = _pairs()
  ours = _batch_metrics()['ssim_matlab']
  ref = [_ssim_matlab_reference(a, b) for a, b in zip(sharp, degraded)]
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_conventions_differ_on_blurred_photo():
  _, _, names = _pairs()
  out = _batch_metrics()
  i = names.index('astronaut/gaussian')
  assert abs(out['ssim_matlab'][i] - out['ssim_per_channel'][i]) > 1e-3


def test_ssim_and_psnr_functions_match_image_metrics():
  sharp, degraded, _ = _pairs()
  out = _batch_metrics()
  np.testing.assert_allclose(
    metrics.psnr(sharp, degraded), out['psnr'], rtol=0, atol=1e-6
  )
  for convention in metrics.CONVENTIONS:
    np.testing.assert_allclose(
      metrics.ssim(sharp, degraded, convention=convention),
      out[f'ssim_{convention}'],
      rtol=0,
      atol=1e-6,
    )


def test_batched_equals_per_image():
  sharp, degraded, _ = _pairs()
  out = _batch_metrics()
  for i in (0, 5, 11):
    single = metrics.image_metrics(sharp[i], degraded[i])
    for key, value in single.items():
      assert value.shape == ()
      np.testing.assert_allclose(value, out[key][i], rtol=0, atol=1e-6)


def test_float_inputs_are_quantized_like_uint8():
  sharp, degraded, _ = _pairs()
  rng = np.random.default_rng(1)
  # Off-level floats that round back to the same 8-bit levels.
  a = sharp / 255.0 + rng.uniform(-0.45, 0.45, sharp.shape) / 255.0
  b = degraded.astype(np.float32) / np.float32(255.0)
  out = metrics.image_metrics(a.astype(np.float32), b)
  for key, value in _batch_metrics().items():
    np.testing.assert_array_equal(np.asarray(out[key]), value)
  # Same images on a 0..255 float scale.
  out = metrics.image_metrics(
    sharp.astype(np.float32) + 0.2, degraded.astype(np.float32), max_value=255.0
  )
  for key, value in _batch_metrics().items():
    np.testing.assert_array_equal(np.asarray(out[key]), value)


def test_quantization_matches_img_as_ubyte():
  rng = np.random.default_rng(2)
  levels = np.arange(256, dtype=np.float32)
  x = (
    np.concatenate(
      [
        (levels + 0.5) / 255.0,  # exact ties: round half to even
        rng.uniform(0.0, 1.0, 20 * 20 * 3 - 256),
      ]
    )
    .astype(np.float32)
    .reshape(20, 20, 3)
  )
  x = np.clip(x, 0.0, 1.0)
  expected = util.img_as_ubyte(x)
  out_of_range = np.where(x > 0.5, x + 1.0, x - 1.0)  # clipped to [0, 1]
  assert float(metrics.psnr(x, expected, max_db=None)) == np.inf
  clipped = np.where(x > 0.5, 255, 0).astype(np.uint8)
  assert float(metrics.psnr(out_of_range, clipped, max_db=None)) == np.inf


def test_unquantized_floats_match_skimage_on_float64():
  sharp, degraded, _ = _pairs()
  a = sharp[:2].astype(np.float64) / 255.0
  b = ndimage.gaussian_filter(a, (0, 1.3, 1.3, 0))  # not on 8-bit levels
  ours_psnr = metrics.psnr(a, b, quantize=False)
  ours_ssim = metrics.ssim(a, b, quantize=False, convention='per_channel')
  for i in range(2):
    ref_psnr = skmetrics.peak_signal_noise_ratio(a[i], b[i], data_range=1.0)
    ref_ssim = skmetrics.structural_similarity(
      a[i],
      b[i],
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
      channel_axis=-1,
      data_range=1.0,
    )
    assert abs(float(ours_psnr[i]) - ref_psnr) < 1e-4
    assert abs(float(ours_ssim[i]) - ref_ssim) < 1e-4


@pytest.mark.parametrize('shape', [(11, 11), (13, 65), (16, 75), (6, 9)])
def test_small_and_odd_shapes(shape):
  """Strip and edge-row bookkeeping: window == width, partial last strip."""
  h, w = shape
  rng = np.random.default_rng(h * w)
  a = data.astronaut()[100 : 100 + h, 200 : 200 + w]
  b = _to_uint8(a + rng.normal(0.0, 10.0, a.shape))
  assert abs(float(metrics.ssim(a, b)) - _ssim_matlab_reference(a, b)) < 1e-6
  if min(h, w) >= 11:
    ours = metrics.ssim(a, b, convention='per_channel')
    assert abs(float(ours) - _ssim_skimage(a, b)) < 1e-6


def test_jit_and_traced_inputs():
  sharp, degraded, _ = _pairs()

  @jax.jit
  def step(a, b):
    a = a.astype(jnp.float32) / 255.0  # traced floats, quantized inside
    return (
      metrics.psnr(a, b),
      metrics.ssim(a, b),
      metrics.ssim(a, b, convention='per_channel'),
    )

  p, s_matlab, s_per_channel = step(sharp[:4], degraded[:4])
  out = _batch_metrics()
  np.testing.assert_allclose(p, out['psnr'][:4], rtol=0, atol=1e-5)
  np.testing.assert_allclose(
    s_matlab, out['ssim_matlab'][:4], rtol=0, atol=1e-6
  )
  np.testing.assert_allclose(
    s_per_channel, out['ssim_per_channel'][:4], rtol=0, atol=1e-6
  )


def test_identical_images():
  sharp, _, _ = _pairs()
  x = sharp[:2]
  out = metrics.image_metrics(x, x)
  np.testing.assert_array_equal(out['psnr'], [100.0, 100.0])  # capped
  np.testing.assert_array_equal(metrics.psnr(x, x, max_db=None), [np.inf] * 2)
  np.testing.assert_array_equal(metrics.psnr(x, x, max_db=60.0), [60.0] * 2)
  for convention in metrics.CONVENTIONS:
    np.testing.assert_allclose(
      out[f'ssim_{convention}'], [1.0, 1.0], rtol=0, atol=1e-6
    )


def test_constant_images():
  sharp, _, _ = _pairs()
  a = np.zeros((3,) + sharp.shape[1:], np.uint8)
  b = np.zeros_like(a)
  a[0], b[0] = 200, 190  # two different constants
  a[2], b[2] = 128, sharp[0]  # a constant against a photograph
  out = {k: np.asarray(v) for k, v in metrics.image_metrics(a, b).items()}
  for key, value in out.items():
    assert np.all(np.isfinite(value)), key
  # Zero variance: SSIM reduces to its luminance term (exactly 1 for 0 vs 0).
  expected = [(2 * 200 * 190 + _C1) / (200**2 + 190**2 + _C1), 1.0]
  for convention in metrics.CONVENTIONS:
    np.testing.assert_allclose(
      out[f'ssim_{convention}'][:2], expected, rtol=0, atol=1e-6
    )
  np.testing.assert_allclose(
    out['ssim_per_channel'][2], _ssim_skimage(a[2], b[2]), rtol=0, atol=1e-5
  )
  np.testing.assert_allclose(
    out['ssim_matlab'][2], _ssim_matlab_reference(a[2], b[2]), rtol=0, atol=1e-5
  )
  np.testing.assert_allclose(
    out['psnr'][:2], [10 * np.log10(255.0**2 / 100.0), 100.0], rtol=0, atol=1e-4
  )


def test_invalid_arguments():
  x = np.zeros((16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match='convention'):
    metrics.ssim(x, x, convention='rgb')
  with pytest.raises(ValueError, match='Shape mismatch'):
    metrics.ssim(x, x[:15])
  with pytest.raises(ValueError, match='per_channel'):
    metrics.ssim(x[:10], x[:10], convention='per_channel')
  with pytest.raises(TypeError, match='uint8 or floating'):
    metrics.psnr(x.astype(np.int32), x.astype(np.int32))
  # MATLAB's convention has no minimum size (replicate padding).
  assert float(metrics.ssim(x[:5, :7], x[:5, :7])) == pytest.approx(1.0)
