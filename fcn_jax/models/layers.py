"""Building blocks shared by every stage of FCN.

Official names are given beside ours. All convolutions have no bias and 'same'
padding (k // 2), as in the release.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Hyper-parameters every block shares (hashable, so modules can hold it).

  Attributes:
    kernel_size: spatial size of the body convolutions (official: 3).
    reduction: channel-attention squeeze ratio (official: 4).
    dtype: computation dtype; parameters are always float32.
    precision: `jax.lax` precision of the convolutions ('highest' for parity
      checks on GPUs, where the default may use TF32).
    tlc_ratio: test-time local statistics (TLC, Chu et al. 2022). None pools
      the channel attention over the whole feature map, as the release does.
      (rh, rw) replaces that global mean by a local mean over a window of
      rh*h x rw*w (h, w: the feature map's size), i.e. the share of the map that
      a training crop covered.
  """
  kernel_size: int = 3
  reduction: int = 4
  dtype: Dtype = jnp.float32
  precision: Optional[str] = None
  tlc_ratio: Optional[tuple[float, float]] = None


# PyTorch's default Conv2d initialisation (kaiming_uniform with a=sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the start the release trains from.
TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def _conv_same(x: Array, w: Array, precision) -> Array:
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=precision)


# Winograd F(4x4, 3x3) (Lavin & Gray, 2016): a 3x3 correlation over a 6x6 input
# tile d gives the 4x4 output tile A^T [(G w G^T) * (B^T d B)] A.
_WINO_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
_WINO_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_WINO_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]])


def _combine(matrix: np.ndarray, parts: Sequence[Array]) -> list[Array]:
  """[sum_j matrix[i, j] * parts[j] for each row i], skipping zero terms."""
  out = []
  for row in matrix:
    terms = [p if c == 1 else -p if c == -1 else float(c) * p
             for c, p in zip(row, parts) if c != 0]
    out.append(functools.reduce(jnp.add, terms))
  return out


def _tile_transform(x: Array, matrix: np.ndarray, tile: int) -> Array:
  """matrix . t . matrix^T for every tile t (size matrix.shape[1], stride 4).

  (N, H', W', C) -> (36, N*T, C), the 36 transformed positions first. Rows then
  columns, the intermediate materialised: fused in one pass XLA:CPU recomputes
  the row transform for every output and is 3x slower.
  """
  n, h, w, c = x.shape
  th, tw = (h - tile) // 4 + 1, (w - tile) // 4 + 1
  rows = _combine(matrix, [x[:, i:i + 4 * th:4] for i in range(tile)])
  rows = jax.lax.optimization_barrier(jnp.stack(rows, 1))  # (N, 6, th, W', C)
  cols = _combine(matrix, [rows[:, :, :, j:j + 4 * tw:4] for j in range(tile)])
  out = jnp.stack(cols, 2)                                   # (N, 6, 6, th, tw, C)
  return out.transpose(1, 2, 0, 3, 4, 5).reshape(36, n * th * tw, c)


def winograd_kernel_grad(x: Array, g: Array) -> Array:
  """Kernel gradient of a 3x3 'same' convolution by Winograd F(4x4, 3x3).

  x: (N, H, W, C) input, g: (N, H, W, O) output gradient, H and W multiples of
  4; returns the (3, 3, C, O) gradient. The forward formula is linear in the
  kernel, so its transpose gives sum_tiles G^T [(A g A^T) * (B^T d B)] G: 36
  products (C x T)(T x O) over the T = HW/16 tiles, 4x fewer operations than
  the direct sum. Same values up to rounding (relative 1e-5 in float32).
  """
  if x.shape[1] % 4 or x.shape[2] % 4:
    raise ValueError(f'winograd_kernel_grad needs sides that are multiples of 4, '
                     f'got {x.shape[1]}x{x.shape[2]}')
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  v = _tile_transform(xp, _WINO_BT, 6)            # B^T d B  (36, T, C)
  p = _tile_transform(g, _WINO_AT.T, 4)           # A g A^T  (36, T, O)
  m = jax.lax.dot_general(v, p, (((1,), (1,)), ((0,), (0,))),
                          preferred_element_type=jnp.float32)  # (36, C, O)
  m = m.reshape(6, 6, *m.shape[1:])
  rows = _combine(_WINO_G.T, list(m))             # G^T m G
  return jnp.stack([jnp.stack(_combine(_WINO_G.T, list(r))) for r in rows])


def pointwise_kernel_grad(x: Array, g: Array) -> Array:
  """Kernel gradient of a 1x1 convolution: one product x^T g, (1, 1, C, O)."""
  return jnp.einsum('nhwc,nhwo->co', x, g,
                    preferred_element_type=jnp.float32)[None, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_same_cpu_grad(x: Array, w: Array, precision=None) -> Array:
  """A 'same' NHWC convolution with a faster kernel gradient on XLA:CPU.

  The forward pass and the input gradient are XLA's own convolutions. XLA:CPU
  computes the kernel gradient as a convolution with an H x W window: 4-8x the
  forward pass's time. Here 1x1 kernels take one matrix product and 3x3
  kernels `winograd_kernel_grad` (about 1.6x the forward pass).
  """
  return _conv_same(x, w, precision)


def _conv_cpu_fwd(x, w, precision):
  return _conv_same(x, w, precision), (x, w)


def _conv_cpu_bwd(precision, residuals, g):
  x, w = residuals
  if w.shape[:2] not in ((1, 1), (3, 3)):
    raise ValueError(f'conv_same_cpu_grad supports 1x1 and 3x3 kernels, got {w.shape[:2]}')
  _, input_vjp = jax.vjp(lambda v: _conv_same(v, w, precision), x)
  (dx,) = input_vjp(g)
  kernel_grad = pointwise_kernel_grad if w.shape[0] == 1 else winograd_kernel_grad
  return dx, kernel_grad(x, g).astype(w.dtype)


conv_same_cpu_grad.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


# Maps smaller than this keep XLA's kernel gradient: there it is cheap, and the
# custom one adds compile time (measured on the demo config: 1024 gives
# 0.535 s per step and 23 s to compile, 256 0.578 s and 27 s, 0 0.561 s and 30 s).
MIN_CPU_GRAD_PIXELS = 1024


def _use_cpu_grad(x: Array, kernel: Array) -> bool:
  """Whether `conv_same_cpu_grad` applies: on CPU, for maps of at least
  MIN_CPU_GRAD_PIXELS, 1x1 kernels and float32 3x3 kernels on maps whose sides
  are multiples of 4 with at least 16 input channels (reading the 3-channel
  image, XLA's own is faster). Never for symbolic shapes (jax.export of
  inference, where no gradient is taken)."""
  if any(map(jax.export.is_symbolic_dim, x.shape[1:3])):
    return False
  if jax.default_backend() != 'cpu' or x.shape[1] * x.shape[2] < MIN_CPU_GRAD_PIXELS:
    return False
  k, _, c, _ = kernel.shape
  if k == 1:
    return True
  return (k == 3 and kernel.dtype == jnp.float32 and c >= 16
          and x.shape[1] % 4 == 0 and x.shape[2] % 4 == 0)


# XLA:CPU puts large convolutions in YNNPACK fusions by default; its runtime
# (Eigen) convolution is faster on FCN's shapes. See `compiler_options`.
_CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


@functools.cache
def _cpu_options_accepted() -> bool:
  """Whether this jaxlib's XLA:CPU knows the options (they are experimental)."""
  try:
    one = jax.device_put(np.ones((), np.float32), jax.local_devices(backend='cpu')[0])
    jax.jit(lambda v: v + 1, compiler_options=_CPU_COMPILER_OPTIONS).lower(one).compile()
  except jax.errors.JaxRuntimeError as e:
    logging.warning('XLA:CPU rejects %s (%s); compiling with its defaults.',
                    _CPU_COMPILER_OPTIONS, str(e).splitlines()[0])
    return False
  return True


def compiler_options(backend: Optional[str] = None) -> Optional[dict[str, str]]:
  """`jax.jit(..., compiler_options=...)` for programs that run FCN.

  On CPU, XLA's runtime convolutions instead of YNNPACK fusions: the same
  values, 10% faster inference and 4-9% faster training steps of the
  full-width model at 128x128 (one 3x3 96->96 layer: 11.3 -> 9.3 ms; see
  BENCHMARKS.md). Unlike XLA_FLAGS it applies to one compilation only. None on
  other backends, and (with a warning) with a jaxlib that no longer knows the
  option. `backend` defaults to JAX's default backend.
  """
  if (backend or jax.default_backend()) == 'cpu' and _cpu_options_accepted():
    return dict(_CPU_COMPILER_OPTIONS)
  return None


class Conv(nn.Module):
  """The release's bias-free convolution with k // 2 padding (HWIO kernel).

  Parameters are float32; the computation runs in `cfg.dtype`. On CPU the
  kernel gradient comes from `conv_same_cpu_grad` where it applies.
  """
  cfg: BlockConfig
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    kernel = self.param('kernel', TORCH_CONV_INIT, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = x.astype(self.cfg.dtype), kernel.astype(self.cfg.dtype)
    if _use_cpu_grad(x, kernel):
      return conv_same_cpu_grad(x, kernel, self.cfg.precision)
    return _conv_same(x, kernel, self.cfg.precision)


def conv(cfg: BlockConfig, features: int, kernel_size: int,
         name: Optional[str] = None) -> Conv:
  """A bias-free 'same' convolution (official: nn.Conv2d(..., bias=False))."""
  return Conv(cfg, features, kernel_size, name=name)


def prelu(x: Array, alpha: Array) -> Array:
  """PReLU with one learned slope (official: the single shared nn.PReLU)."""
  return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def downsample2x(x: Array) -> Array:
  """Bilinear x0.5 resize with align_corners=False, on NHWC maps of even size.

  For a factor of exactly 1/2 PyTorch's bilinear sample points fall halfway
  between two pixels, so the result is the mean of each 2x2 block (no
  antialiasing filter, unlike `jax.image.resize`'s default).
  """
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample2x_axis(x: Array, axis: int) -> Array:
  # Output 2i samples input i - 1/4, output 2i+1 samples i + 1/4; the edges
  # clamp, as PyTorch does with align_corners=False.
  n = x.shape[axis]
  first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
  last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
  prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)],
                         axis=axis)
  nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last],
                        axis=axis)
  even = 0.75 * x + 0.25 * prev
  odd = 0.75 * x + 0.25 * nxt
  out = jnp.stack([even, odd], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] = 2 * n
  return out.reshape(shape)


def upsample2x(x: Array) -> Array:
  """Bilinear x2 resize with align_corners=False (PyTorch's nn.Upsample)."""
  return _upsample2x_axis(_upsample2x_axis(x, 1), 2)


def _local_mean(x: Array, window: tuple[int, int]) -> Array:
  """Mean over a (kh, kw) window at every position, via an integral image.

  Windows that would cross the border are shifted inside it (TLC's edge
  handling), so every output averages exactly kh*kw pixels.
  """
  kh, kw = window
  s = jnp.cumsum(jnp.cumsum(x.astype(jnp.float32), axis=1), axis=2)
  s = jnp.pad(s, ((0, 0), (1, 0), (1, 0), (0, 0)))
  box = (s[:, kh:, kw:] - s[:, :-kh, kw:] - s[:, kh:, :-kw] + s[:, :-kh, :-kw])
  box = box / (kh * kw)
  top, left = (kh - 1) // 2, (kw - 1) // 2
  box = jnp.pad(box, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left),
                      (0, 0)), mode='edge')
  return box.astype(x.dtype)


def _spatial_mean(x: Array) -> Array:
  """Float32 mean over H and W, keepdims (official: nn.AdaptiveAvgPool2d(1)).

  Rows first, then columns: XLA:CPU splits a joint (H, W) reduction into
  32x32 reduce-windows, 3-4x slower on FCN's maps (e.g. 0.89 -> 0.34 ms on
  1x128x128x96).
  """
  y = jnp.mean(x.astype(jnp.float32), axis=1, keepdims=True)
  return jnp.mean(y, axis=2, keepdims=True)


class ChannelAttention(nn.Module):
  """Channel attention (official: CALayer): pool, squeeze, excite, rescale."""
  cfg: BlockConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    h, w = x.shape[1:3]
    if self.cfg.tlc_ratio is None:
      y = _spatial_mean(x)
    else:
      kh = max(1, min(h, round(self.cfg.tlc_ratio[0] * h)))
      kw = max(1, min(w, round(self.cfg.tlc_ratio[1] * w)))
      if (kh, kw) == (h, w):
        y = _spatial_mean(x)
      else:
        y = _local_mean(x, (kh, kw))
    y = y.astype(self.cfg.dtype)
    y = nn.relu(conv(self.cfg, c // self.cfg.reduction, 1, name='squeeze')(y))
    y = nn.sigmoid(conv(self.cfg, c, 1, name='excite')(y))
    return x * y


class CAB(nn.Module):
  """Channel attention block (official: CAB): conv-act-conv, attention, residual.

  `activation` is 'prelu' (the release's one shared PReLU, whose slope is passed
  in) or 'selu' (the processing block of stage 0).
  """
  cfg: BlockConfig
  activation: str = 'prelu'

  @nn.compact
  def __call__(self, x: Array, alpha: Optional[Array] = None) -> Array:
    c = x.shape[-1]
    k = self.cfg.kernel_size
    y = conv(self.cfg, c, k, name='conv1')(x)
    y = jax.nn.selu(y) if self.activation == 'selu' else prelu(y, alpha)
    y = conv(self.cfg, c, k, name='conv2')(y)
    return ChannelAttention(self.cfg, name='ca')(y) + x


class CABStack(nn.Module):
  """`num` CABs in sequence (official: nn.Sequential of CABs)."""
  cfg: BlockConfig
  num: int

  @nn.compact
  def __call__(self, x: Array, alpha: Array) -> Array:
    for i in range(self.num):
      x = CAB(self.cfg, name=f'cab{i}')(x, alpha)
    return x


class DownSample(nn.Module):
  """Bilinear x0.5 then 1x1 conv C -> C + s (official: DownSample)."""
  cfg: BlockConfig
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return conv(self.cfg, self.features, 1, name='conv')(downsample2x(x))


class UpSample(nn.Module):
  """Bilinear x2 and 1x1 conv C + s -> C (official: UpSample, SkipUpSample).

  The 1x1 convolution runs before the resize: both are linear, one acts on
  channels and the other on positions, so they commute, and the convolution is
  4x cheaper at the low resolution.
  """
  cfg: BlockConfig
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return upsample2x(conv(self.cfg, self.features, 1, name='conv')(x))
