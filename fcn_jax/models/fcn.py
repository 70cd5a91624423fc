"""FCN, the feature catcher network (paper Fig. 2; official: Net in Net.py).

Stages, as in the paper's Fig. 2 (patch counts 8, 4, 2, 1):
  stage 0  `processing_block`     eight H/2 x W/4 strips (paper: processing block;
                                  official: shallow_feat0, a conv and a SELU CAB)
  stage 1  `shallow_feat1`, `stage1_encoder`, `query_key`, `stage1_decoder`,
           `msam12`                four H/2 x W/2 quarters; the query-key mechanism
                                  gates the top stage-0 map into the encoder's
                                  first level (official: attention_down/up)
  stage 2  `shallow_feat2`, `concat12`, `stage2_encoder`, `stage2_decoder`,
           `msam23`                top and bottom halves, cross-stage fusion
  stage 3  `shallow_feat3`, `concat23`, `raw_information`, `tail`
                                  the whole image (paper: raw information mechanism;
                                  official: stage3_orsnet)
`msam12`/`msam23` are the multi-stage attention mechanism (official: sam12/sam23).

Patches that share weights are folded into the batch axis, so each stage runs
its blocks once; every per-image statistic (channel attention, LayerNorm) is
per batch entry, which makes the folding exact.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcn_jax.models.attention import MultiStageAttention, QueryKeyGate
from fcn_jax.models.layers import BlockConfig, CAB, conv
from fcn_jax.models.orsnet import RawInformationMechanism
from fcn_jax.models.unet import Decoder, Encoder

Array = jax.Array


def split_rows(x: Array, k: int) -> Array:
  """(N, H, W, C) -> (N*k, H/k, W, C), the k horizontal bands of each image."""
  n, h, w, c = x.shape
  return x.reshape(n * k, h // k, w, c)


def merge_rows(x: Array, k: int) -> Array:
  """Inverse of `split_rows`: concatenate k bands along the height."""
  nk, h, w, c = x.shape
  return x.reshape(nk // k, k * h, w, c)


def split_cols(x: Array, k: int) -> Array:
  """(N, H, W, C) -> (N*k, H, W/k, C), the k vertical strips of each image."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, k, w // k, c).transpose(0, 2, 1, 3, 4)
  return x.reshape(n * k, h, w // k, c)


def merge_cols(x: Array, k: int) -> Array:
  """Inverse of `split_cols`: concatenate k strips along the width."""
  nk, h, w, c = x.shape
  x = x.reshape(nk // k, k, h, w, c).transpose(0, 2, 1, 3, 4)
  return x.reshape(nk // k, h, k * w, c)


class ShallowFeatures(nn.Module):
  """A 3x3 conv 3 -> n and one CAB (official: shallow_feat0..3).

  With `activation='selu'` this is the paper's processing block (stage 0).
  """
  cfg: BlockConfig
  n_feat: int
  activation: str = 'prelu'

  @nn.compact
  def __call__(self, x: Array, alpha: Array) -> Array:
    x = conv(self.cfg, self.n_feat, self.cfg.kernel_size, name='conv')(x)
    return CAB(self.cfg, self.activation, name='cab')(x, alpha)


class FCN(nn.Module):
  """The FCN deblurring network.

  Takes NHWC images in [0, 1] whose height and width are multiples of 8 and
  returns the three stage images, final first as in the release:
  [stage 3 (final), stage 2, stage 1], each shaped like the input, float32.

  Attributes:
    n_feat, scale_unetfeats, scale_orsnetfeats, num_cab, kernel_size,
      reduction: the official hyper-parameters (defaults: the published model).
    dtype: computation dtype ('float32' or 'bfloat16'); parameters stay float32.
    precision: convolution precision (None, 'high', 'highest').
    remat: stages (0..3) whose blocks are rematerialised in the backward pass.
    tlc_train_size: test-time local statistics: the training crop size whose
      statistics channel attention should see (None: global pooling).
  """
  n_feat: int = 96
  scale_unetfeats: int = 48
  scale_orsnetfeats: int = 32
  num_cab: int = 8
  kernel_size: int = 3
  reduction: int = 4
  dtype: Any = 'float32'
  precision: Optional[str] = None
  remat: Sequence[int] = ()
  tlc_train_size: Optional[int] = None

  def _block(self, cls, stage: int):
    return nn.remat(cls) if stage in tuple(self.remat) else cls

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(
          f'FCN expects NHWC images with 3 channels, got shape {tuple(x.shape)}')
    n, h, w, _ = x.shape
    if h % 8 or w % 8:
      raise ValueError(
          f'FCN needs height and width that are multiples of 8, got {h}x{w}; '
          'reflect-pad the image first (fcn_jax.inference does)')
    tlc = None
    if self.tlc_train_size is not None:
      tlc = (min(1.0, self.tlc_train_size / h), min(1.0, self.tlc_train_size / w))
    dtype = jnp.dtype(self.dtype)
    cfg = BlockConfig(self.kernel_size, self.reduction, dtype, self.precision, tlc)
    nf, su = self.n_feat, self.scale_unetfeats
    alpha = self.param('prelu', nn.initializers.constant(0.25), (1,), jnp.float32)
    x = x.astype(dtype)
    halves = split_rows(x, 2)                       # (2N, H/2, W): top, bottom

    # Stage 0: the processing block on eight strips.
    strips = split_cols(halves, 4)                  # (8N, H/2, W/4)
    f0 = self._block(ShallowFeatures, 0)(cfg, nf, 'selu', name='processing_block')(
        strips, alpha)
    f0 = merge_cols(f0, 4)                          # (2N, H/2, W): top, bottom

    # Stage 1: four quarters through one U-Net; the query-key gate.
    quarters = split_cols(halves, 2)                # (4N, H/2, W/2)
    y = ShallowFeatures(cfg, nf, name='shallow_feat1')(quarters, alpha)
    enc1 = self._block(Encoder, 1)(cfg, nf, su, name='stage1_encoder')(y, alpha)
    enc1 = [merge_cols(e, 2) for e in enc1]         # (2N, ...): top, bottom
    f0 = f0.reshape(n, 2, *f0.shape[1:])
    gated_top = QueryKeyGate(cfg, nf, name='query_key')(f0[:, 0])
    enc1[0] = enc1[0] + jnp.stack([gated_top, f0[:, 1]], 1).reshape(enc1[0].shape)
    dec1 = self._block(Decoder, 1)(cfg, nf, su, name='stage1_decoder')(enc1, alpha)
    feats, img = MultiStageAttention(cfg, nf, name='msam12')(dec1[0], halves)
    stage1_img = merge_rows(img, 2)

    # Stage 2: two halves; cross-stage fusion with the (gated) stage-1 maps.
    y = ShallowFeatures(cfg, nf, name='shallow_feat2')(halves, alpha)
    y = conv(cfg, nf, self.kernel_size, name='concat12')(
        jnp.concatenate([y, feats], axis=-1))
    enc2 = self._block(Encoder, 2)(cfg, nf, su, csff=True, name='stage2_encoder')(
        y, alpha, enc1, dec1)
    enc2 = [merge_rows(e, 2) for e in enc2]         # (N, ...): whole images
    dec2 = self._block(Decoder, 2)(cfg, nf, su, name='stage2_decoder')(enc2, alpha)
    feats, stage2_img = MultiStageAttention(cfg, nf, name='msam23')(dec2[0], x)

    # Stage 3: the whole image and the raw information mechanism.
    y = ShallowFeatures(cfg, nf, name='shallow_feat3')(x, alpha)
    y = conv(cfg, nf + self.scale_orsnetfeats, self.kernel_size, name='concat23')(
        jnp.concatenate([y, feats], axis=-1))
    y = self._block(RawInformationMechanism, 3)(
        cfg, nf, self.scale_orsnetfeats, su, self.num_cab,
        name='raw_information')(y, alpha, enc2, dec2)
    stage3_img = conv(cfg, 3, self.kernel_size, name='tail')(y) + x
    return [o.astype(jnp.float32) for o in (stage3_img, stage2_img, stage1_img)]


def init_params(model: FCN, rng: jax.Array,
                image_shape: Sequence[int] = (1, 64, 64, 3)) -> Any:
  """Initial parameters of `model`, drawn with one RNG call.

  Same distribution as `model.init` (PyTorch's default for every conv kernel,
  0.25 for the PReLU slope), but `model.init` draws each of the ~250 tensors
  separately and XLA:CPU takes ~0.1 s to compile each draw; one draw for all
  of them compiles in well under a second. Call it under `jax.jit`.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct(tuple(image_shape), jnp.float32))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes['params'])
  sizes = [leaf.size for _, leaf in leaves]
  u = jax.random.uniform(rng, (sum(sizes),), jnp.float32, -1.0, 1.0)
  out, start = [], 0
  for (path, leaf), size in zip(leaves, sizes):
    name = path[-1].key
    if name == 'prelu':
      out.append(jnp.full(leaf.shape, 0.25, jnp.float32))
    else:
      fan_in = size // leaf.shape[-1]
      out.append(u[start:start + size].reshape(leaf.shape) / jnp.sqrt(fan_in))
    start += size
  return jax.tree_util.tree_unflatten(treedef, out)
