"""RealBlur's aligned PSNR/SSIM in XLA: intensity scale, ECC homography, warp.

Real camera pairs (RealBlur, Rim et al., ECCV 2020) are not pixel aligned, so
the published RealBlur figures (the RealBlur paper, MPRNet, Restormer and their
followers, all with the same evaluation, based on Koehler et al.'s) first
register each restored image to its ground truth. Per image, float32 in
[0, 1]:

1. Intensity match: `zs = sum(gt * out) / sum(out * out) * out`.
2. ECC registration (Evangelidis and Psarakis, 2008) of `zs` to `gt` on
   grayscale (0.299 R + 0.587 G + 0.114 B), a homography starting from the
   identity, as OpenCV's `findTransformECC(gray(gt), gray(zs), eye(3),
   MOTION_HOMOGRAPHY, (EPS | COUNT, 100, 0), None, gaussFiltSize=5)`: both
   images smoothed by the 5-tap binomial Gaussian, central-difference
   gradients, then forwards-additive Gauss-Newton steps on the 8 parameters
   with the ECC illumination factor lambda; it stops after `iterations` steps
   or once the correlation changes by less than `eps` (with eps 0, all 100
   run).
3. The warp (`WARP_INVERSE_MAP`: it maps ground-truth pixels to output pixels)
   resamples `zs` bicubically with a reflecting border, and an all-ones mask by
   nearest neighbour with a zero border; both images are multiplied by the
   mask.
4. PSNR = 10 log10(1 / (sum of squared differences / sum of the mask)), over
   all pixels and channels.
5. SSIM: skimage's `structural_similarity(gt_masked, out_masked,
   channel_axis=-1, gaussian_weights=True, sigma=1.5,
   use_sample_covariance=False, data_range=1, full=True)` map (11x11 window,
   radius 5, reflecting border), multiplied by the mask, 5 pixels cropped on
   each side, summed per channel over the crop and divided by the mask's sum
   there; the image's SSIM is the mean over channels. The reference is
   skimage's SSIM in float64, as skimage 0.17.2 (the version the RealBlur
   authors pin) computes it for float32 images; skimage >= 0.19 keeps them in
   float32, which moves the figure by up to 4e-4 on 680x773 images.

This is the variant of the RealBlur authors' `evaluation_RealBlur_ecc.py` and
of MPRNet's and Restormer's `evaluate_RealBlur.py` (window 11, gaussFiltSize
5, no fallback on failure). Resampling follows OpenCV's `warpPerspective`:
source coordinates rounded to 1/32 pixel for bilinear and bicubic
(`INTER_TAB_SIZE`), bicubic with a = -0.75, nearest by rounding half to even.
Where OpenCV's findTransformECC would raise (a NaN correlation, or a step
that would minimise the correlation), and where the published script would
therefore stop, the iterations stop, `converged` is False and the image is
scored with the identity warp (the fallback of several forks of that script),
so that one such image cannot turn a test set's mean into NaN.

Everything is float32 and traceable: `aligned_metrics` takes `(N, H, W, 3)`
batches (or one `(H, W, 3)` image) and is jit-compiled per shape.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  'ITERATIONS',
  'EPS',
  'Alignment',
  'intensity_match',
  'rgb_to_gray',
  'ecc_homography',
  'warp_image',
  'warp_mask',
  'masked_psnr',
  'masked_ssim',
  'align',
  'aligned_metrics',
]

ITERATIONS = 100
EPS = 0.0
# OpenCV's sub-pixel resolution of the resampling tables (INTER_TAB_SIZE).
_TAB = 32.0
# getGaussianKernel(5, sigma<=0): the fixed binomial taps.
_BINOMIAL5 = np.array([1, 4, 6, 4, 1], np.float32) / 16
_GRAY = (0.299, 0.587, 0.114)
_CUBIC_A = -0.75
# skimage's Gaussian SSIM window: sigma 1.5, radius int(3.5 * 1.5 + 0.5) = 5.
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5
_K1, _K2 = 0.01, 0.03


class Alignment(NamedTuple):
  """The registration of one image (or a batch) to its ground truth."""

  warp: jax.Array  # (..., 3, 3): ground-truth pixel -> output pixel.
  rho: jax.Array  # (...,): the last enhanced correlation coefficient.
  iterations: jax.Array  # (...,) int32: steps run.
  converged: jax.Array  # (...,) bool: False where OpenCV would have raised.


def intensity_match(output: jax.Array, target: jax.Array) -> jax.Array:
  """Scales `output` by the least-squares factor to `target` (one image)."""
  return (jnp.sum(target * output) / jnp.sum(output * output)) * output


def rgb_to_gray(image: jax.Array) -> jax.Array:
  """OpenCV's COLOR_RGB2GRAY on float images: (..., 3) -> (...)."""
  r, g, b = (image[..., c] for c in range(3))
  return _GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b


def _sum2(x: jax.Array) -> jax.Array:
  """Sum over the last two axes, rows first (keeps float32 error small)."""
  return jnp.sum(jnp.sum(x, axis=-1), axis=-1)


def _filter_rows_cols(x: jax.Array, taps: np.ndarray, mode: str) -> jax.Array:
  """Separable filter of a (H, W) image with odd `taps`, padded by `mode`."""
  r = len(taps) // 2
  h, w = x.shape
  p = jnp.pad(x, r, mode=mode)
  rows = sum(float(t) * p[:, i : i + w] for i, t in enumerate(taps))
  return sum(float(t) * rows[i : i + h, :] for i, t in enumerate(taps))


def _smooth(x: jax.Array) -> jax.Array:
  """GaussianBlur(x, (5, 5), 0): binomial taps, BORDER_REFLECT_101."""
  return _filter_rows_cols(x, _BINOMIAL5, 'reflect')


def _gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """filter2D with (-0.5, 0, 0.5) along x and y, BORDER_REFLECT_101."""
  p = jnp.pad(x, 1, mode='reflect')
  gx = 0.5 * (p[1:-1, 2:] - p[1:-1, :-2])
  gy = 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1])
  return gx, gy


def _grid(h: int, w: int) -> tuple[jax.Array, jax.Array]:
  ys, xs = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32),
    jnp.arange(w, dtype=jnp.float32),
    indexing='ij',
  )
  return xs, ys


def _source_coords(warp: jax.Array, h: int, w: int) -> tuple[jax.Array, ...]:
  """Output-image coordinates of every ground-truth pixel (inverse map)."""
  xs, ys = _grid(h, w)
  den = warp[2, 0] * xs + warp[2, 1] * ys + warp[2, 2]
  inv = jnp.where(den != 0, 1.0 / den, 0.0)
  sx = (warp[0, 0] * xs + warp[0, 1] * ys + warp[0, 2]) * inv
  sy = (warp[1, 0] * xs + warp[1, 1] * ys + warp[1, 2]) * inv
  return sx, sy


def _quantize(c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Integer cell and fraction, the coordinate rounded to 1/32 pixel."""
  q = jnp.round(c * _TAB)
  cell = jnp.floor(q / _TAB)
  return cell.astype(jnp.int32), q / _TAB - cell


def _gather(image: jax.Array, yi: jax.Array, xi: jax.Array) -> jax.Array:
  """image[yi, xi] for in-range integer maps; image is (H, W) or (H, W, C)."""
  h, w = image.shape[:2]
  flat = image.reshape((h * w,) + image.shape[2:])
  return jnp.take(flat, yi * w + xi, axis=0)


def _bilinear_zero(image: jax.Array, sx: jax.Array, sy: jax.Array) -> jax.Array:
  """INTER_LINEAR with BORDER_CONSTANT 0 at coordinates (sx, sy)."""
  h, w = image.shape[:2]
  x0, fx = _quantize(sx)
  y0, fy = _quantize(sy)
  if image.ndim == 3:
    fx, fy = fx[..., None], fy[..., None]
  out = 0.0
  for dy, wy in ((0, 1 - fy), (1, fy)):
    for dx, wx in ((0, 1 - fx), (1, fx)):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      value = _gather(image, jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1))
      if image.ndim == 3:
        inside = inside[..., None]
      out = out + jnp.where(inside, value, 0.0) * (wx * wy)
  return out


def _reflect(i: jax.Array, n: int) -> jax.Array:
  """BORDER_REFLECT (fedcba|abcdef|fedcba) of integer indices into [0, n)."""
  m = jnp.mod(i, 2 * n)
  return jnp.where(m >= n, 2 * n - 1 - m, m)


def _cubic_weights(t: jax.Array) -> list[jax.Array]:
  """OpenCV's interpolateCubic: the 4 taps at offsets -1, 0, 1, 2."""
  a = _CUBIC_A
  w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
  w1 = ((a + 2) * t - (a + 3)) * t * t + 1
  w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
  return [w0, w1, w2, 1 - w0 - w1 - w2]


def _bicubic_reflect(
  image: jax.Array, sx: jax.Array, sy: jax.Array
) -> jax.Array:
  """INTER_CUBIC with BORDER_REFLECT of an (H, W, C) image."""
  h, w = image.shape[:2]
  x0, fx = _quantize(sx)
  y0, fy = _quantize(sy)
  wxs = _cubic_weights(fx)
  wys = _cubic_weights(fy)
  out = 0.0
  for j, wy in enumerate(wys):
    yi = _reflect(y0 + j - 1, h)
    row = 0.0
    for i, wx in enumerate(wxs):
      xi = _reflect(x0 + i - 1, w)
      row = row + _gather(image, yi, xi) * wx[..., None]
    out = out + row * wy[..., None]
  return out


def _nearest_inside(sx: jax.Array, sy: jax.Array, h: int, w: int) -> jax.Array:
  """INTER_NEAREST of an all-ones image with a zero border, as float32."""
  xi, yi = jnp.round(sx), jnp.round(sy)
  inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
  return inside.astype(jnp.float32)


def warp_image(image: jax.Array, warp: jax.Array) -> jax.Array:
  """warpPerspective(image, warp, INTER_CUBIC | WARP_INVERSE_MAP, REFLECT)."""
  h, w = image.shape[:2]
  sx, sy = _source_coords(warp, h, w)
  return _bicubic_reflect(image, sx, sy)


def warp_mask(warp: jax.Array, h: int, w: int) -> jax.Array:
  """warpPerspective(ones, warp, INTER_NEAREST | WARP_INVERSE_MAP), (H, W)."""
  sx, sy = _source_coords(warp, h, w)
  return _nearest_inside(sx, sy, h, w)


def _homography_jacobian(
  gx: jax.Array, gy: jax.Array, warp: jax.Array
) -> jax.Array:
  """d(warped image)/d(parameters), (8, H, W), OpenCV's parameter order.

  The parameters are the warp's entries column by column without the last:
  (m00, m10, m20, m01, m11, m21, m02, m12).
  """
  h, w = gx.shape
  xs, ys = _grid(h, w)
  den = warp[2, 0] * xs + warp[2, 1] * ys + 1.0
  hat_x = -(warp[0, 0] * xs + warp[0, 1] * ys + warp[0, 2]) / den
  hat_y = -(warp[1, 0] * xs + warp[1, 1] * ys + warp[1, 2]) / den
  gxd, gyd = gx / den, gy / den
  t = hat_x * gxd + hat_y * gyd
  return jnp.stack(
    [gxd * xs, gyd * xs, t * xs, gxd * ys, gyd * ys, t * ys, gxd, gyd]
  )


# Positions in the flattened 3x3 warp of the 8 parameters, in order.
_PARAM_INDEX = np.array([0, 3, 6, 1, 4, 7, 2, 5])


def _solve(hessian: jax.Array, rhs: jax.Array) -> jax.Array:
  """hessian^-1 rhs with Jacobi scaling (the entries span ~10 decades)."""
  d = jax.lax.rsqrt(jnp.maximum(jnp.diagonal(hessian), 1e-30))
  scaled = hessian * d[:, None] * d[None, :]
  return d * jnp.linalg.solve(scaled, d * rhs)


def ecc_homography(
  template: jax.Array,
  image: jax.Array,
  iterations: int = ITERATIONS,
  eps: float = EPS,
) -> Alignment:
  """findTransformECC(template, image, eye(3), MOTION_HOMOGRAPHY, ...).

  Args:
    template: (H, W) grayscale ground truth.
    image: (H, W) grayscale image to register (the same size here).
    iterations: At most this many steps (TERM_CRITERIA_COUNT).
    eps: Stop once |rho - last rho| < eps (TERM_CRITERIA_EPS).

  Returns:
    The warp mapping template pixels to image pixels, and how it ended.
  """
  h, w = template.shape
  template = _smooth(template.astype(jnp.float32))
  image = _smooth(image.astype(jnp.float32))
  gx, gy = _gradients(image)
  # The image and both gradients are resampled together.
  stacked = jnp.stack([image, gx, gy], axis=-1)

  def step(state):
    warp, rho, _, i, _ = state
    sx, sy = _source_coords(warp, h, w)
    warped = _bilinear_zero(stacked, sx, sy)
    img_w, gx_w, gy_w = warped[..., 0], warped[..., 1], warped[..., 2]
    mask = _nearest_inside(sx, sy, h, w)
    n = jnp.sum(mask)
    img_mean = _sum2(img_w * mask) / n
    tmp_mean = _sum2(template * mask) / n
    img_var = jnp.maximum(_sum2(img_w * img_w * mask) / n - img_mean**2, 0.0)
    tmp_var = jnp.maximum(
      _sum2(template * template * mask) / n - tmp_mean**2, 0
    )
    # As OpenCV: the mean is taken off inside the mask only.
    img_zm = jnp.where(mask > 0, img_w - img_mean, img_w)
    tmp_zm = jnp.where(mask > 0, template - tmp_mean, 0.0)
    img_norm = jnp.sqrt(n * img_var)
    tmp_norm = jnp.sqrt(n * tmp_var)
    jac = _homography_jacobian(gx_w, gy_w, warp)
    hessian = jnp.einsum('phw,qhw->pq', jac, jac, precision='highest')
    project = lambda e: _sum2(jac * e[None])
    correlation = _sum2(tmp_zm * img_zm)
    new_rho = correlation / (img_norm * tmp_norm)
    img_proj = project(img_zm)
    tmp_proj = project(tmp_zm)
    img_proj_h = _solve(hessian, img_proj)
    lambda_n = img_norm**2 - jnp.dot(img_proj, img_proj_h)
    lambda_d = correlation - jnp.dot(tmp_proj, img_proj_h)
    ok = jnp.isfinite(new_rho) & (lambda_d > 0)
    error = (lambda_n / lambda_d) * tmp_zm - img_zm
    delta = _solve(hessian, project(error))
    new_warp = warp.reshape(9).at[_PARAM_INDEX].add(delta).reshape(3, 3)
    ok = ok & jnp.all(jnp.isfinite(new_warp))
    return (
      jnp.where(ok, new_warp, warp),
      jnp.where(ok, new_rho, rho),
      rho,
      i + ok.astype(jnp.int32),
      ok,
    )

  def cond(state):
    _, rho, last_rho, i, ok = state
    return ok & (i < iterations) & (jnp.abs(rho - last_rho) >= eps)

  init = (
    jnp.eye(3, dtype=jnp.float32),
    jnp.float32(-1.0),
    jnp.float32(-eps),
    jnp.int32(0),
    jnp.bool_(True),
  )
  warp, rho, _, i, ok = jax.lax.while_loop(cond, step, init)
  return Alignment(warp=warp, rho=rho, iterations=i, converged=ok)


def masked_psnr(target: jax.Array, output: jax.Array, mask: jax.Array):
  """PSNR over the valid region; all arrays (H, W, C), the mask 0/1."""
  err = _sum2(jnp.sum(jnp.square(target - output), axis=-1)) / jnp.sum(mask)
  return -10.0 * jnp.log10(err)


def _ssim_taps() -> np.ndarray:
  x = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
  return (taps / taps.sum()).astype(np.float32)


def masked_ssim(target: jax.Array, output: jax.Array, mask: jax.Array):
  """SSIM of the masked images, the map weighted by the mask and cropped."""
  taps = _ssim_taps()
  filt = jax.vmap(
    lambda x: _filter_rows_cols(x, taps, 'symmetric'), in_axes=-1, out_axes=-1
  )
  c1, c2 = _K1**2, _K2**2
  ux, uy = filt(target), filt(output)
  vx = filt(target * target) - ux * ux
  vy = filt(output * output) - uy * uy
  vxy = filt(target * output) - ux * uy
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / (
    (ux * ux + uy * uy + c1) * (vx + vy + c2)
  )
  r = _SSIM_RADIUS
  s = (s * mask)[r:-r, r:-r]
  m = mask[r:-r, r:-r]
  per_channel = jnp.sum(jnp.sum(s, 0), 0) / jnp.sum(jnp.sum(m, 0), 0)
  return jnp.mean(per_channel)


def align(
  output: jax.Array,
  target: jax.Array,
  iterations: int = ITERATIONS,
  eps: float = EPS,
) -> tuple[jax.Array, jax.Array, jax.Array, Alignment]:
  """One (H, W, 3) image: the masked aligned output, masked target, mask."""
  output = output.astype(jnp.float32)
  target = target.astype(jnp.float32)
  zs = intensity_match(output, target)
  result = ecc_homography(
    rgb_to_gray(target), rgb_to_gray(zs), iterations=iterations, eps=eps
  )
  h, w = target.shape[:2]
  warp = jnp.where(result.converged, result.warp, jnp.eye(3))
  result = result._replace(warp=warp)
  mask = warp_mask(warp, h, w)[..., None] * jnp.ones((1, 1, 3))
  zr = warp_image(zs, warp) * mask
  return zr, target * mask, mask, result


def _aligned_one(output, target, iterations, eps):
  zr, xr, mask, result = align(output, target, iterations, eps)
  return {
    'psnr': masked_psnr(xr, zr, mask),
    'ssim': masked_ssim(xr, zr, mask),
    'valid_fraction': jnp.mean(mask),
    'warp': result.warp,
    'rho': result.rho,
    'iterations': result.iterations,
    'converged': result.converged,
  }


@functools.partial(jax.jit, static_argnames=('iterations', 'eps'))
def aligned_metrics(
  output: jax.Array,
  target: jax.Array,
  iterations: int = ITERATIONS,
  eps: float = EPS,
) -> dict[str, jax.Array]:
  """Aligned PSNR/SSIM of restored images against their ground truth.

  Args:
    output: (N, H, W, 3) or (H, W, 3) restored images, floats in [0, 1].
    target: Ground truth, the same shape.
    iterations: ECC steps at most (the published protocol: 100).
    eps: ECC stopping threshold on the correlation change (published: 0).

  Returns:
    psnr, ssim, valid_fraction (share of the ground truth the warped output
    covers), warp (3x3, the one used: identity where not converged), rho,
    iterations and converged, per image.
  """
  one = functools.partial(_aligned_one, iterations=iterations, eps=eps)
  if output.ndim == 3:
    return one(output, target)
  return jax.vmap(one)(output, target)
