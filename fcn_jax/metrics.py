"""Image-quality metrics (PSNR, SSIM) in XLA.

The paper's table reports PSNR/SSIM computed by MATLAB on saved 8-bit PNGs,
while most Python code bases report a per-channel SSIM. Both are provided,
in float32 (no x64), and match float64 references on real photographs to
about 1e-6 (SSIM) and 1e-5 dB (PSNR):

* `ssim(..., convention='matlab')`: MATLAB's `ssim(A, ref)` on RGB uint8
  images, which treats an H x W x 3 image as a 3-D volume: a normalized
  11 x 11 x 11 Gaussian window (sigma 1.5, size 2*ceil(3*sigma)+1), replicate
  padding on all three axes (so along the 3 channels the window is truncated
  with replicated edge channels), C1 = (0.01*255)^2, C2 = (0.03*255)^2, mean
  of the full SSIM map.
* `ssim(..., convention='per_channel')`: `skimage.metrics.structural_similarity(
  a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1, data_range=255)` (equivalently BasicSR's RGB SSIM): a 2-D
  11 x 11 Gaussian per channel, the map cropped by 5 pixels on each side
  (which makes the boundary mode irrelevant), mean over pixels and channels.
* `psnr`: 10*log10(255^2/MSE), the MSE taken over all pixels and channels of
  each image (MATLAB's `psnr` and skimage's `peak_signal_noise_ratio`).

Inputs are `(N, H, W, C)` batches or single `(H, W, C)` images (results of
shape `(N,)` or `()`), as uint8 levels 0..255 or floats in [0, max_value]. With
`quantize=True` (the default) floats are first mapped to 8-bit levels as when
saving a PNG: multiply by 255 / max_value in float32, round half to even, clip
to [0, 255] (for max_value=1 exactly skimage's `img_as_ubyte` on [0, 1]).
Everything is evaluated on the 0..255 scale, so C1/C2 use a dynamic range of
255 (equivalently max_value for floats).

Implementation: the 3-D Gaussian is separable, and along the channel axis a
replicate-padded 11-tap window over 3 channels is just a fixed C x C mixing
matrix, so both conventions share one separable 2-D filtering of the four
moment maps (x, y, x^2+y^2, x*y). A `lax.map` walks over vertical strips of
`_STRIP` columns of each image: along W the filter is a small banded matmul
(replicate padding folded into the band), along H shifted sums over rows
padded by replication. Inputs are centered on a per-image constant before
squaring (variances and covariance are shift invariant), which keeps float32
cancellation errors near 1e-7. The strip layout (and dots rather than
reductions for the sums) was tuned for XLA:CPU, where a fused two-pass filter
gets recomputed per tap; results are the same on every backend.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['psnr', 'ssim', 'image_metrics', 'CONVENTIONS']

CONVENTIONS = ('matlab', 'per_channel')

_SIGMA = 1.5
# MATLAB: 2*ceil(3*sigma)+1 = 11 taps; skimage: radius int(3.5*sigma+0.5) = 5.
_RADIUS = 5
_K1, _K2 = 0.01, 0.03
_PEAK = 255.0
_C1 = (_K1 * _PEAK) ** 2
_C2 = (_K2 * _PEAK) ** 2
# Columns per strip; 64 was fastest on a 2-core XLA:CPU for 720x1280 images.
_STRIP = 64
_HIGHEST = jax.lax.Precision.HIGHEST


def _gaussian_taps() -> np.ndarray:
  """Normalized 1-D Gaussian, `2 * _RADIUS + 1` taps (float64)."""
  t = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
  g = np.exp(-t * t / (2.0 * _SIGMA * _SIGMA))
  return g / g.sum()


def _channel_mixing(channels: int) -> np.ndarray:
  """`(C, C)` matrix of the 11-tap Gaussian along channels, replicate padded."""
  g = _gaussian_taps()
  mix = np.zeros((channels, channels))
  for c in range(channels):
    for k in range(-_RADIUS, _RADIUS + 1):
      mix[c, min(max(c + k, 0), channels - 1)] += g[k + _RADIUS]
  return mix


def _strip_plan(width: int) -> tuple[int, int, np.ndarray, np.ndarray]:
  """Splits `width` columns into strips, for filtering along W as a matmul.

  Strip `j` covers output columns `[j*S, (j+1)*S)` and reads the `window`
  input columns starting at `starts[j]` (kept inside the image). `bands[j]`
  maps that window to the strip's outputs: the 11-tap Gaussian with replicate
  ('nearest') padding folded in, and zero columns past the right edge.

  Returns:
    `(S, window, starts, bands)` with `bands` of shape `(n, window, S)`.
  """
  g = _gaussian_taps()
  strip = min(_STRIP, width)
  n = -(-width // strip)
  window = min(strip + 2 * _RADIUS, width)
  starts = np.clip(np.arange(n) * strip - _RADIUS, 0, width - window)
  bands = np.zeros((n, window, strip))
  for j in range(n):
    for o in range(min(strip, width - j * strip)):
      for t in range(2 * _RADIUS + 1):
        source = min(max(j * strip + o + t - _RADIUS, 0), width - 1)
        bands[j, source - starts[j], o] += g[t]
  return strip, window, starts, bands


def _to_levels(x: Any, quantize: bool, max_value: float) -> jax.Array:
  """Maps an image to the 0..255 scale: uint8 (exact levels) or float32."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return x
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f'Expected uint8 or floating images, got {x.dtype}.')
  # For max_value=1 as skimage's img_as_ubyte: float32 product x * 255.
  x = x.astype(jnp.float32) * jnp.float32(_PEAK / max_value)
  if quantize:  # round half to even, clip to [0, 255]
    return jnp.clip(jnp.round(x), 0.0, _PEAK).astype(jnp.uint8)
  return x


def _prepare(
  a: Any, b: Any, quantize: bool, max_value: float
) -> tuple[jax.Array, jax.Array, bool]:
  """Returns both images as `(N, H, W, C)` 0..255 arrays, and if unbatched."""
  a = _to_levels(a, quantize, max_value)
  b = _to_levels(b, quantize, max_value)
  if a.shape != b.shape:
    raise ValueError(f'Shape mismatch: {a.shape} vs {b.shape}.')
  if a.ndim not in (3, 4):
    raise ValueError(
      f'Expected (N, H, W, C) or (H, W, C) images, got {a.shape}.'
    )
  if a.dtype != b.dtype:  # uint8 vs float32: compare as float32.
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  single = a.ndim == 3
  if single:
    a, b = a[None], b[None]
  return a, b, single


def _ssim_means(
  x: jax.Array, y: jax.Array, conventions: Sequence[str]
) -> dict[str, jax.Array]:
  """Mean SSIM per image and convention of `(N, H, W, C)` 0..255 arrays."""
  n, h, w, c = x.shape
  r = _RADIUS
  if 'per_channel' in conventions and min(h, w) < 2 * r + 1:
    raise ValueError(
      f'per_channel SSIM needs H, W >= {2 * r + 1}, got {h}x{w}.'
    )
  strip, window, starts, bands = _strip_plan(w)
  n_strips = len(starts)
  # Per-image centering constant shared by both images (any value is exact in
  # theory; near the mean it minimizes float32 cancellation). Subsampled.
  center = 0.5 * (
    jnp.mean(x[:, ::4, ::4], axis=(1, 2, 3), dtype=jnp.float32)
    + jnp.mean(y[:, ::4, ::4], axis=(1, 2, 3), dtype=jnp.float32)
  )
  # Replicate padding along H (cheap: whole rows); along W it is in `bands`.
  xp = jnp.pad(x, ((0, 0), (r, r), (0, 0), (0, 0)), mode='edge')
  yp = jnp.pad(y, ((0, 0), (r, r), (0, 0), (0, 0)), mode='edge')
  taps = [np.float32(t) for t in _gaussian_taps()]
  mix = _channel_mixing(c)
  # Selects the four moment maps without a concatenate (slow on XLA:CPU).
  one_hot = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1, 1)
  # Rows summed per convention: all, or the 'valid' rows [R, H - R).
  rows = {'matlab': (0, h), 'per_channel': (r, h - r)}
  cols = np.arange(n_strips)[:, None] * strip + np.arange(strip)
  col_weights = {
    'matlab': (cols < w).astype(np.float32),
    'per_channel': ((cols >= r) & (cols < w - r)).astype(np.float32),
  }

  def ssim_map(mx, my, sq, xy, m):
    # mx, my: filtered centered images; sq: of x^2 + y^2; xy: of x * y.
    var = sq - mx * mx - my * my  # sigma_x^2 + sigma_y^2
    cov = xy - mx * my
    mx, my = mx + m, my + m
    return (
      (2.0 * mx * my + _C1)
      * (2.0 * cov + _C2)
      / ((mx * mx + my * my + _C1) * (var + _C2))
    )

  def one_strip(args):
    """Column sums `(S,)` of the strip's SSIM map, per convention."""
    i, j = args
    m = center[i]

    def load(v):  # (C, H + 2R, window) float32, centered.
      v = jax.lax.dynamic_slice(
        v, (i, 0, starts_[j], 0), (1, h + 2 * r, window, c)
      )
      return jnp.transpose(v[0], (2, 0, 1)).astype(jnp.float32) - m

    xs, ys = load(xp), load(yp)
    moments = (
      one_hot[0] * xs
      + one_hot[1] * ys
      + one_hot[2] * (xs * xs + ys * ys)
      + one_hot[3] * (xs * ys)
    )
    moments = jnp.dot(moments, bands_[j], precision=_HIGHEST)  # along W
    f = taps[0] * moments[:, :, 0:h]
    for t in range(1, 2 * r + 1):  # along H
      f = f + taps[t] * moments[:, :, t : t + h]
    sums = []
    for conv in conventions:
      lo, hi = rows[conv]
      per_channel = [f[:, k, lo:hi] for k in range(c)]  # (4, rows, S) each
      if conv == 'matlab':
        per_channel = [
          sum(mix[k, q] * per_channel[q] for q in range(c)) for k in range(c)
        ]
      smap = sum(ssim_map(*fk, m) for fk in per_channel)  # (rows, S)
      # Sums as dots: XLA:CPU reduce fusions are slow here.
      sums.append(
        jnp.dot(np.ones(hi - lo, np.float32), smap, precision=_HIGHEST)
      )
    return tuple(sums)

  starts_ = jnp.asarray(starts, jnp.int32)
  bands_ = jnp.asarray(bands, jnp.float32)
  ii, jj = np.meshgrid(np.arange(n), np.arange(n_strips), indexing='ij')
  sums = jax.lax.map(
    one_strip, (jnp.asarray(ii.ravel()), jnp.asarray(jj.ravel()))
  )
  counts = {'matlab': h * w * c, 'per_channel': (h - 2 * r) * (w - 2 * r) * c}
  return {
    conv: jnp.einsum(
      'njs,js->n',
      s.reshape(n, n_strips, strip),
      col_weights[conv],
      precision=_HIGHEST,
    )
    / counts[conv]
    for conv, s in zip(conventions, sums)
  }


def _psnr(x: jax.Array, y: jax.Array, max_db: float | None) -> jax.Array:
  """PSNR per image of `(N, H, W, C)` 0..255 arrays."""
  _, h, w, c = x.shape
  d = x.astype(jnp.float32) - y.astype(jnp.float32)  # exact for 8-bit levels
  # float32 sums (an int32 reduction is 7x slower on XLA:CPU); relative error
  # ~1e-7, i.e. ~1e-6 dB.
  mse = jnp.sum(jnp.sum(d * d, axis=(2, 3)), axis=1) / (h * w * c)
  db = 10.0 * jnp.log10(_PEAK**2 / mse)  # inf where mse == 0
  return db if max_db is None else jnp.minimum(db, jnp.float32(max_db))


@functools.partial(jax.jit, static_argnames=('quantize', 'max_value', 'max_db'))
def psnr(
  a: Any,
  b: Any,
  *,
  quantize: bool = True,
  max_value: float = 1.0,
  max_db: float | None = 100.0,
) -> jax.Array:
  """Peak signal-to-noise ratio in dB, 10*log10(255^2 / MSE), per image.

  Args:
    a: `(N, H, W, C)` or `(H, W, C)` image(s), uint8 or float in [0, max_value].
    b: Same shape as `a`; the order of `a` and `b` does not matter.
    quantize: Round float inputs to 8-bit levels first (as saved PNGs); if
      False they are only scaled to 0..255 (not clipped).
    max_value: White level of float inputs (ignored for uint8).
    max_db: Identical images have MSE 0 and an infinite PSNR; the result is
      capped at `max_db` so that means over a data set stay finite (100 dB
      needs an MSE below 6.5e-6 levels^2, far beyond any restoration). `None`
      returns `inf` for identical images.

  Returns:
    float32 PSNR of shape `(N,)`, or `()` for a single image.
  """
  x, y, single = _prepare(a, b, quantize, max_value)
  out = _psnr(x, y, max_db)
  return out[0] if single else out


@functools.partial(
  jax.jit, static_argnames=('convention', 'quantize', 'max_value')
)
def ssim(
  a: Any,
  b: Any,
  *,
  convention: str = 'matlab',
  quantize: bool = True,
  max_value: float = 1.0,
) -> jax.Array:
  """Mean structural similarity per image (see the module docstring).

  Constant or identical images are well defined (C1, C2 > 0): identical
  images give exactly 1 up to float32 rounding, never NaN.

  Args:
    a: `(N, H, W, C)` or `(H, W, C)` image(s), uint8 or float in [0, max_value].
    b: Same shape as `a` (SSIM is symmetric).
    convention: 'matlab' (3-D window, as in the paper's table) or
      'per_channel' (skimage / BasicSR); 'per_channel' needs H, W >= 11.
    quantize: Round float inputs to 8-bit levels first (as saved PNGs); if
      False they are only scaled to 0..255 (not clipped).
    max_value: White level of float inputs (ignored for uint8).

  Returns:
    float32 SSIM of shape `(N,)`, or `()` for a single image.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f'convention must be one of {CONVENTIONS}: {convention!r}')
  x, y, single = _prepare(a, b, quantize, max_value)
  out = _ssim_means(x, y, (convention,))[convention]
  return out[0] if single else out


@functools.partial(jax.jit, static_argnames=('quantize', 'max_value', 'max_db'))
def image_metrics(
  a: Any,
  b: Any,
  *,
  quantize: bool = True,
  max_value: float = 1.0,
  max_db: float | None = 100.0,
) -> dict[str, jax.Array]:
  """`psnr`, `ssim_matlab` and `ssim_per_channel` of each image in one pass.

  Both SSIM conventions share their filtering, so this costs little more
  than one `ssim` call. Arguments are as for `psnr` and `ssim`.

  Returns:
    Dict of float32 arrays of shape `(N,)` (or `()`), keyed `psnr`,
    `ssim_matlab` and `ssim_per_channel`.
  """
  x, y, single = _prepare(a, b, quantize, max_value)
  out = {'psnr': _psnr(x, y, max_db)}
  for conv, value in _ssim_means(x, y, CONVENTIONS).items():
    out[f'ssim_{conv}'] = value
  return {k: v[0] for k, v in out.items()} if single else out
