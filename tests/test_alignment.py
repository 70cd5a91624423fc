"""RealBlur's aligned PSNR/SSIM in XLA against the OpenCV + skimage path.

The pairs are made here from real photographs (skimage.data): the ground
truth is the photo, the "restored" image is the photo with real motion blur
(a 9-pixel line kernel at 30 degrees), moved by a known homography and
rescaled in intensity, as RealBlur's camera pairs are. The reference is the
published evaluation (window 11, gaussFiltSize 5, 100 iterations, eps 0)
written with OpenCV's findTransformECC and warpPerspective and skimage's
structural_similarity, as in the RealBlur authors' script.

Tolerances, and why:
* homography: the corners of the image mapped by the two warps agree to
  0.02 px. Both run the same 100 forwards-additive steps towards the same ECC
  maximum; they differ only by float32 rounding (OpenCV accumulates its dot
  products in double, XLA in float32 with row sums) and by solving the 8x8
  system (OpenCV's LU of the raw Hessian, here a Jacobi-scaled solve); the
  measured gap is 0.0005 to 0.005 px.
* PSNR 0.01 dB, SSIM 5e-4: both resample on OpenCV's 1/32-pixel table, so a
  warp that differs by a few thousandths of a pixel moves some pixels to the
  neighbouring table entry (measured: up to 0.005 dB and 2e-4, on the pair
  that needs no warp, where many coordinates sit near a table boundary;
  1e-5 dB and 1e-5 elsewhere).
"""

import os
import pathlib
import subprocess
import sys

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform
from skimage.metrics import structural_similarity

from fcn_jax import alignment

_H, _W = 128, 160
_CORNER_PX = 0.02
_PSNR_DB = 0.01
_SSIM = 5e-4


def _photo(name: str) -> np.ndarray:
  image = getattr(skimage.data, name)()
  return skimage.transform.resize(image, (_H, _W), anti_aliasing=True).astype(
    np.float32
  )


def _motion_blur(image: np.ndarray) -> np.ndarray:
  kernel = np.zeros((9, 9), np.float32)
  kernel[4, :] = 1
  rotation = cv2.getRotationMatrix2D((4, 4), 30, 1)
  kernel = cv2.warpAffine(kernel, rotation, (9, 9))
  kernel /= kernel.sum()
  return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _pair(name, homography, gain):
  """(restored, ground truth): the blurred photo moved by `homography`."""
  sharp = _photo(name)
  moved = cv2.warpPerspective(
    _motion_blur(sharp),
    homography,
    (_W, _H),
    flags=cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_REFLECT,
  )
  return np.clip(moved * gain, 0, 1).astype(np.float32), sharp


_CASES = {
  # No motion between the two: only the blur.
  'identity': ('astronaut', np.eye(3, dtype=np.float32), 1.0),
  # A small perspective motion, 0.9 of the exposure.
  'small': (
    'astronaut',
    np.array(
      [[1.01, 0.01, 1.5], [-0.008, 0.995, -1.2], [2e-5, -3e-5, 1]], np.float32
    ),
    0.9,
  ),
  # Zoomed by 1.25: the output covers only ~63% of the ground truth.
  'far_from_full': (
    'coffee',
    np.array([[1.25, 0.01, 2.0], [-0.01, 1.25, 1.0], [0, 0, 1]], np.float32),
    1.0,
  ),
}


def _opencv_reference(restored, target):
  """The published evaluation of one image: (warp, psnr, ssim, valid)."""
  zs = (np.sum(target * restored) / np.sum(restored * restored)) * restored
  criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 0)
  _, warp = cv2.findTransformECC(
    cv2.cvtColor(target, cv2.COLOR_RGB2GRAY),
    cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY),
    np.eye(3, dtype=np.float32),
    cv2.MOTION_HOMOGRAPHY,
    criteria,
    None,
    5,
  )
  size = (target.shape[1], target.shape[0])
  zr = cv2.warpPerspective(
    zs,
    warp,
    size,
    flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_REFLECT,
  )
  cr = cv2.warpPerspective(
    np.ones_like(zs),
    warp,
    size,
    flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=0,
  )
  zr, xr = zr * cr, target * cr
  err = np.sum((xr - zr) ** 2, dtype=np.float64) / np.sum(cr)
  psnr = 10 * np.log10(1 / err)
  # In float64, as skimage 0.17.2 (the version the RealBlur authors pin)
  # computes it; skimage >= 0.19 keeps float32 inputs in float32, which moves
  # the figure by up to 4e-4 on 680x773 images.
  _, ssim_map = structural_similarity(
    xr.astype(np.float64),
    zr.astype(np.float64),
    channel_axis=-1,
    gaussian_weights=True,
    use_sample_covariance=False,
    data_range=1.0,
    full=True,
  )
  crop = (ssim_map * cr)[5:-5, 5:-5]
  ssim = np.mean(
    crop.sum(axis=(0, 1)) / cr[5:-5, 5:-5].sum(axis=(0, 1)), dtype=np.float64
  )
  return warp, psnr, ssim, cr.mean()


def _corners(warp: np.ndarray) -> np.ndarray:
  c = np.array(
    [[0, 0, 1], [_W - 1, 0, 1], [0, _H - 1, 1], [_W - 1, _H - 1, 1]], float
  ).T
  p = warp.astype(np.float64) @ c
  return (p[:2] / p[2]).T


@pytest.fixture(name='batch', scope='module')
def _batch():
  """The three cases as one batch, through one compiled call."""
  pairs = [_pair(*_CASES[name]) for name in _CASES]
  restored = np.stack([p[0] for p in pairs])
  target = np.stack([p[1] for p in pairs])
  result = alignment.aligned_metrics(jnp.asarray(restored), jnp.asarray(target))
  result = {k: np.asarray(v) for k, v in result.items()}
  return restored, target, result


@pytest.mark.parametrize('index,name', list(enumerate(_CASES)))
def test_matches_opencv(batch, index, name):
  restored, target, result = batch
  warp, psnr, ssim, valid = _opencv_reference(restored[index], target[index])
  ours = result['warp'][index]
  gap = np.abs(_corners(ours) - _corners(warp)).max()
  assert gap < _CORNER_PX, (name, ours, warp)
  assert abs(result['psnr'][index] - psnr) < _PSNR_DB, name
  assert abs(result['ssim'][index] - ssim) < _SSIM, name
  assert abs(result['valid_fraction'][index] - valid) < 1e-3, name
  assert result['converged'][index]
  assert result['iterations'][index] == alignment.ITERATIONS  # eps 0: all.
  # The homography the pair was made with, to within the pixel that the blur
  # and the 1.25 zoom's resampling leave (OpenCV's own gap is the same).
  true = _CASES[name][1]
  assert np.abs(_corners(ours) - _corners(true)).max() < 1.0, name


def test_far_from_full_mask(batch):
  """The valid region really is a small part of the image there."""
  _, _, result = batch
  fractions = dict(zip(_CASES, result['valid_fraction']))
  assert fractions['identity'] == 1.0
  assert 0.55 < fractions['far_from_full'] < 0.7


def test_alignment_helps_and_single_image_equals_batch(batch):
  """Registration beats the unaligned score; (H, W, 3) equals its row."""
  restored, target, result = batch
  i = list(_CASES).index('far_from_full')
  one = alignment.aligned_metrics(
    jnp.asarray(restored[i]), jnp.asarray(target[i])
  )
  # Same steps; only XLA's float32 summation order differs under vmap.
  gap = np.abs(_corners(np.asarray(one['warp'])) - _corners(result['warp'][i]))
  assert gap.max() < _CORNER_PX
  assert abs(float(one['psnr']) - result['psnr'][i]) < _PSNR_DB
  plain = 10 * np.log10(1 / np.mean((restored[i] - target[i]) ** 2))
  assert result['psnr'][i] > plain + 5


def test_warp_matches_warp_perspective():
  """Bicubic/reflect image and nearest/zero mask resampling, pixel by pixel."""
  image = _photo('chelsea')
  warp = np.array(
    [[1.02, 0.03, -3.3], [-0.02, 0.97, 2.1], [1e-4, -5e-5, 1]], np.float32
  )
  size = (_W, _H)
  expected = cv2.warpPerspective(
    image,
    warp,
    size,
    flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_REFLECT,
  )
  ours = np.asarray(alignment.warp_image(jnp.asarray(image), jnp.asarray(warp)))
  # Pixels whose coordinate sits on a 1/32 table boundary may round the other
  # way (float32 here, double in OpenCV): allow a few per thousand.
  close = np.abs(ours - expected) < 1e-5
  assert close.mean() > 0.995
  mask = cv2.warpPerspective(
    np.ones((_H, _W), np.uint8),
    warp,
    size,
    flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
  )
  ours_mask = np.asarray(alignment.warp_mask(jnp.asarray(warp), _H, _W))
  np.testing.assert_array_equal(ours_mask, mask)


def test_imports_without_tensorflow():
  code = (
    "import sys\n"
    "sys.modules['tensorflow'] = None  # any import of it fails\n"
    "import fcn_jax.alignment\n"
    "print('ok')\n"
  )
  proc = subprocess.run(
    [sys.executable, '-c', code],
    cwd=pathlib.Path(__file__).resolve().parents[1],
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr


def test_where_opencv_raises_the_identity_is_used():
  """Noise against a photo: findTransformECC raises at its first step; here
  `converged` is False and the image is scored unwarped."""
  target = _photo('astronaut')
  noise = np.random.default_rng(1).random(target.shape).astype(np.float32)
  with pytest.raises(cv2.error, match='converge'):
    _opencv_reference(noise, target)
  result = alignment.aligned_metrics(jnp.asarray(noise), jnp.asarray(target))
  assert not result['converged']
  np.testing.assert_array_equal(np.asarray(result['warp']), np.eye(3))
  assert float(result['valid_fraction']) == 1.0
  zs = (np.sum(target * noise) / np.sum(noise * noise)) * noise
  plain = 10 * np.log10(1 / np.mean((zs - target) ** 2, dtype=np.float64))
  assert abs(float(result['psnr']) - plain) < 1e-3
