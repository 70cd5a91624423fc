"""Building blocks shared by every stage of FCN.

Official names are given beside ours. All convolutions have no bias and 'same'
padding (k // 2), as in the release.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from fcn_jax import cpu

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
  remat: str = 'none'
  remat_policy: str = 'nothing_saveable'


REMAT_GRANULARITIES = ('stage', 'level', 'block')
REMAT_POLICIES = ('nothing_saveable', 'conv_saveable', 'dots_saveable')


def remat_policy(name: str):
  """The `jax.checkpoint` policy of a `remat_policy` name.

  'nothing_saveable': the backward pass recomputes everything inside the
  block from its inputs; 'conv_saveable': the outputs of the convolutions (named
  'conv' by `Conv`) are kept, only the cheap element-wise work is recomputed;
  'dots_saveable': JAX's policy that keeps dot and convolution primitives
  (on CPU the convolutions are custom-gradient calls it does not see).
  """
  policies = {
    'nothing_saveable': jax.checkpoint_policies.nothing_saveable,
    'conv_saveable': jax.checkpoint_policies.save_only_these_names('conv'),
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
  }
  if name not in policies:
    raise ValueError(f'remat_policy={name!r}: use one of {tuple(policies)}')
  return policies[name]


def maybe_remat(cls, cfg: BlockConfig, granularity: str):
  """`cls` under `nn.remat` when `cfg.remat` is `granularity`, else `cls`.

  Rematerialisation changes what the backward pass keeps, not the values:
  outputs and gradients are the same with and without it.
  """
  if cfg.remat != granularity:
    return cls
  return nn.remat(cls, policy=remat_policy(cfg.remat_policy))


# PyTorch's default Conv2d initialisation (kaiming_uniform with a=sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the start the release trains from.
TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


class Conv(nn.Module):
  """The release's bias-free convolution with k // 2 padding (HWIO kernel).

  Parameters are float32; the computation runs in `cfg.dtype`. On CPU the
  kernel gradient comes from `fcn_jax.cpu.conv_same_cpu_grad` where it applies.
  """

  cfg: BlockConfig
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    kernel = self.param(
      'kernel', TORCH_CONV_INIT, (k, k, x.shape[-1], self.features), jnp.float32
    )
    x, kernel = x.astype(self.cfg.dtype), kernel.astype(self.cfg.dtype)
    y = cpu.conv_same(x, kernel, self.cfg.precision)
    return checkpoint_name(y, 'conv')


def conv(
  cfg: BlockConfig, features: int, kernel_size: int, name: Optional[str] = None
) -> Conv:
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
  prev = jnp.concatenate(
    [first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis
  )
  nxt = jnp.concatenate(
    [jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis
  )
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
  box = s[:, kh:, kw:] - s[:, :-kh, kw:] - s[:, kh:, :-kw] + s[:, :-kh, :-kw]
  box = box / (kh * kw)
  top, left = (kh - 1) // 2, (kw - 1) // 2
  box = jnp.pad(
    box,
    ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)),
    mode='edge',
  )
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
    cab = maybe_remat(CAB, self.cfg, 'block')
    for i in range(self.num):
      x = cab(self.cfg, name=f'cab{i}')(x, alpha)
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
