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

Ablation switches (paper Table 2; the defaults are the full model). Our
mapping onto the release's modules, which the paper does not spell out; each
paper description fits one release module (PB, Fig. 3a: a conv and SELU
blocks; EFEM, Fig. 4a: LayerNorm and 1x1 convs n -> n/2 -> n; MSAM, Fig. 4b:
a stage image and features for the next stage, i.e. SAM; RIM, sec. 3.5: the
last module of stage 3, fed with stage 2's U-Net outputs, i.e. ORSNet):
  use_pb     processing block PB = `processing_block` (official: shallow_feat0)
             with its two additions into the first encoder level of the first
             U-Net stage. PB is the only thing stage 0 does, so without it stage
             0 is empty and the query-key gate has no key: `use_efem` must be
             False too. use_pb=False, use_efem=False at 4 stages is MPRNet
             (Zamir et al. 2021): the same modules, names and shapes.
  use_efem   enhanced feature extraction EFEM = `query_key` (official: the
             LayerNorm and attention_down/attention_up, paper Figs. 3b and 4a):
             the query that gates the top half of PB's map. Without it the top
             half is added ungated, like the bottom half always is.
  use_msam   multi-stage attention MSAM = `msam12`, `msam23` (official: sam12,
             sam23). Without it the next stage gets the decoder features
             unchanged and the stage image comes from a 1x1 conv n -> 3 plus
             the stage input (`head12`, `head23`: SAM's own image branch), so
             the loss still sees every stage image.
  use_rim    raw information mechanism RIM = `raw_information` (official:
             stage3_orsnet, its ORBs and its fusion of stage 2's U-Net). Without
             it `concat23` feeds `tail` directly.
  stages     how many of Fig. 2's four stages the network keeps. Our
             interpretation (the paper gives none, yet removes PB, which lives
             in stage 0, and RIM, which lives in stage 3, at every count): the
             two ends are kept longest and the U-Net stages go first:
               4: stages 0, 1, 2, 3 (the full model)
               3: stages 0, 2, 3    (no four-quarter U-Net; PB feeds stage 2's
                                     first encoder level, which has PB's halves)
               2: stages 0, 3       (PB's map is added to stage 3's shallow
                                     features; RIM keeps its ORBs only)
               1: stage 3 alone     (a single whole-image stage)
             Where stage 1 is gone there is no cross-stage fusion into stage
             2 and no `concat12`; where stage 2 is gone, no `concat23` input
             from it and no fusion in RIM. MSAM hands a U-Net stage on to the
             next stage (msam12 after stage 1, msam23 after stage 2), so it
             exists at 3 and 4 stages only; PB and EFEM need stage 0 and do
             not exist at 1 stage: removing a module that a stage count lacks
             leaves the network unchanged.
The network always returns three images [final, stage 2, stage 1], the order
the trainer's loss expects; a stage that is not built returns its input, the
blurry image (as the release's commented-out ablation of SAM does), whose loss
is a constant: it adds nothing to the network's gradient.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcn_jax.models.attention import MultiStageAttention, QueryKeyGate
import dataclasses

from fcn_jax.models.layers import (
  REMAT_GRANULARITIES,
  BlockConfig,
  CAB,
  conv,
  maybe_remat,
)
from fcn_jax.models.orsnet import RawInformationMechanism
from fcn_jax.models.unet import Decoder, Encoder

Array = jax.Array

# `FCN.stages` -> the stages of Fig. 2 it keeps (see the module docstring).
KEPT_STAGES = {4: (0, 1, 2, 3), 3: (0, 2, 3), 2: (0, 3), 1: (3,)}


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
    cab = maybe_remat(CAB, self.cfg, 'block')
    return cab(self.cfg, self.activation, name='cab')(x, alpha)


class FCN(nn.Module):
  """The FCN deblurring network.

  Takes NHWC images in [0, 1] whose height and width are multiples of 8 and
  returns the three stage images, final first as in the release:
  [stage 3 (final), stage 2, stage 1], each shaped like the input, float32.

  Attributes:
    n_feat, scale_unetfeats, scale_orsnetfeats, num_cab, kernel_size,
      reduction: the official hyper-parameters (defaults: the published model).
    dtype: computation dtype ('float32' or 'bfloat16'); parameters stay float32,
      and so do the stage images: under bfloat16 the residual additions that
      make them (`tail(y) + x`, SAM's `conv(x) + x_img`) run in float32.
    precision: convolution precision (None: the backend's default, TF32 on
      Ampere/Hopper GPUs and one bf16 pass on TPU; 'high'; 'highest': full
      float32, for parity).
    remat: stages (0..3) whose blocks are rematerialised in the backward pass.
    remat_granularity: what one rematerialised unit is, inside those stages:
      'stage' (the stage's encoder, decoder, RIM, processing block as one
      unit each), 'level' (each encoder/decoder level's CABs, each ORB) or
      'block' (each CAB).
    remat_policy: what a unit keeps for the backward pass ('nothing_saveable',
      'conv_saveable', 'dots_saveable'; see `layers.remat_policy`).
    tlc_train_size: test-time local statistics: the training crop size whose
      statistics channel attention should see (None: global pooling).
    use_pb, use_efem, use_msam, use_rim, stages: the ablation switches of the
      paper's Table 2 (see the module docstring); defaults: the full model.
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
  remat_granularity: str = 'stage'
  remat_policy: str = 'nothing_saveable'
  tlc_train_size: Optional[int] = None
  use_pb: bool = True
  use_efem: bool = True
  use_msam: bool = True
  use_rim: bool = True
  stages: int = 4

  def kept_stages(self) -> tuple[int, ...]:
    """The stages of Fig. 2 this network builds (stage 0 only with PB)."""
    if self.stages not in KEPT_STAGES:
      raise ValueError(f'FCN.stages={self.stages!r}: use 1, 2, 3 or 4')
    if self.use_efem and not self.use_pb:
      raise ValueError(
        'FCN.use_efem=True needs use_pb=True: the query-key '
        "gate acts on the processing block's map; set both "
        'False'
      )
    return tuple(s for s in KEPT_STAGES[self.stages] if s or self.use_pb)

  def _block(self, cls, stage: int, cfg: BlockConfig):
    if self.remat_granularity not in REMAT_GRANULARITIES:
      raise ValueError(
        f'FCN.remat_granularity={self.remat_granularity!r}: use one of '
        f'{REMAT_GRANULARITIES}'
      )
    if stage in tuple(self.remat) and self.remat_granularity == 'stage':
      return maybe_remat(cls, self._stage_cfg(cfg, stage, 'stage'), 'stage')
    return cls

  def _stage_cfg(
    self, cfg: BlockConfig, stage: int, granularity: Optional[str] = None
  ) -> BlockConfig:
    """The shared BlockConfig, with remat set for the blocks of `stage`."""
    remat = 'none'
    if stage in tuple(self.remat):
      remat = granularity or self.remat_granularity
      if remat == 'stage' and granularity is None:
        remat = 'none'  # the stage's modules are wrapped whole by `_block`
    return dataclasses.replace(cfg, remat=remat, remat_policy=self.remat_policy)

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(
        f'FCN expects NHWC images with 3 channels, got shape {tuple(x.shape)}'
      )
    n, h, w, _ = x.shape
    if h % 8 or w % 8:
      raise ValueError(
        f'FCN needs height and width that are multiples of 8, got {h}x{w}; '
        'reflect-pad the image first (fcn_jax.inference does)'
      )
    kept = self.kept_stages()
    tlc = None
    if self.tlc_train_size is not None:
      tlc = (
        min(1.0, self.tlc_train_size / h),
        min(1.0, self.tlc_train_size / w),
      )
    dtype = jnp.dtype(self.dtype)
    cfg = BlockConfig(
      self.kernel_size, self.reduction, dtype, self.precision, tlc
    )
    cfgs = [self._stage_cfg(cfg, s) for s in range(4)]
    nf, su = self.n_feat, self.scale_unetfeats
    alpha = self.param(
      'prelu', nn.initializers.constant(0.25), (1,), jnp.float32
    )
    # The stage images stay float32: their residual additions run in float32.
    x_img = x.astype(jnp.float32)
    x = x.astype(dtype)
    halves = split_rows(x, 2)  # (2N, H/2, W): top, bottom
    stage1_img = stage2_img = x_img  # stages not built
    enc1 = dec1 = enc2 = dec2 = feats = None

    # Stage 0: the processing block on eight strips.
    if 0 in kept:
      strips = split_cols(halves, 4)  # (8N, H/2, W/4)
      f0 = self._block(ShallowFeatures, 0, cfgs[0])(
        cfgs[0], nf, 'selu', name='processing_block'
      )(strips, alpha)
      f0 = merge_cols(f0, 4).reshape(n, 2, h // 2, w, nf)  # top, bottom

    def add_stage0(y: Array) -> Array:
      """y (2N, H/2, W, nf) + stage 0's map, its top half gated by EFEM."""
      top = (
        QueryKeyGate(cfg, nf, name='query_key')(f0[:, 0])
        if self.use_efem
        else f0[:, 0]
      )
      return y + jnp.stack([top, f0[:, 1]], 1).reshape(y.shape)

    def attend(name: str, y: Array, img: Array) -> tuple[Array, Array]:
      if self.use_msam:
        return MultiStageAttention(cfg, nf, name=f'msam{name}')(y, img)
      head = conv(cfg, 3, 1, name=f'head{name}')(y)
      return y, head.astype(jnp.float32) + img

    # Stage 1: four quarters through one U-Net; the query-key gate.
    if 1 in kept:
      quarters = split_cols(halves, 2)  # (4N, H/2, W/2)
      y = ShallowFeatures(cfgs[1], nf, name='shallow_feat1')(quarters, alpha)
      enc1 = self._block(Encoder, 1, cfgs[1])(
        cfgs[1], nf, su, name='stage1_encoder'
      )(y, alpha)
      enc1 = [merge_cols(e, 2) for e in enc1]  # (2N, ...): top, bottom
      if 0 in kept:
        enc1[0] = add_stage0(enc1[0])
      dec1 = self._block(Decoder, 1, cfgs[1])(
        cfgs[1], nf, su, name='stage1_decoder'
      )(enc1, alpha)
      feats, img = attend('12', dec1[0], split_rows(x_img, 2))
      stage1_img = merge_rows(img, 2)

    # Stage 2: two halves; cross-stage fusion with the (gated) stage-1 maps.
    if 2 in kept:
      y = ShallowFeatures(cfgs[2], nf, name='shallow_feat2')(halves, alpha)
      if 1 in kept:
        y = conv(cfg, nf, self.kernel_size, name='concat12')(
          jnp.concatenate([y, feats], axis=-1)
        )
      enc2 = self._block(Encoder, 2, cfgs[2])(
        cfgs[2], nf, su, csff=1 in kept, name='stage2_encoder'
      )(y, alpha, enc1, dec1)
      if 0 in kept and 1 not in kept:
        enc2[0] = add_stage0(enc2[0])
      enc2 = [merge_rows(e, 2) for e in enc2]  # (N, ...): whole images
      dec2 = self._block(Decoder, 2, cfgs[2])(
        cfgs[2], nf, su, name='stage2_decoder'
      )(enc2, alpha)
      feats, stage2_img = attend('23', dec2[0], x_img)

    # Stage 3: the whole image and the raw information mechanism.
    y = ShallowFeatures(cfgs[3], nf, name='shallow_feat3')(x, alpha)
    if 0 in kept and 2 not in kept:
      y = merge_rows(add_stage0(split_rows(y, 2)), 2)
    if 2 in kept:
      y = jnp.concatenate([y, feats], axis=-1)
    y = conv(
      cfg, nf + self.scale_orsnetfeats, self.kernel_size, name='concat23'
    )(y)
    if self.use_rim:
      y = self._block(RawInformationMechanism, 3, cfgs[3])(
        cfgs[3],
        nf,
        self.scale_orsnetfeats,
        su,
        self.num_cab,
        name='raw_information',
      )(y, alpha, enc2, dec2)
    tail = conv(cfg, 3, self.kernel_size, name='tail')(y)
    stage3_img = tail.astype(jnp.float32) + x_img
    return [stage3_img, stage2_img, stage1_img]


def init_params(
  model: FCN, rng: jax.Array, image_shape: Sequence[int] = (1, 64, 64, 3)
) -> Any:
  """Initial parameters of `model`, drawn with one RNG call.

  Same distribution as `model.init` (PyTorch's default for every conv kernel,
  0.25 for the PReLU slope), but `model.init` draws each of the ~250 tensors
  separately and XLA:CPU takes ~0.1 s to compile each draw; one draw for all
  of them compiles in well under a second. Call it under `jax.jit`.
  """
  shapes = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct(tuple(image_shape), jnp.float32),
  )
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
      out.append(u[start : start + size].reshape(leaf.shape) / jnp.sqrt(fan_in))
    start += size
  return jax.tree_util.tree_unflatten(treedef, out)
