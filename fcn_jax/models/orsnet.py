"""Raw information mechanism of stage 3 (paper Fig. 5; official: ORSNet)."""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax

from fcn_jax.models.layers import (
  BlockConfig,
  CABStack,
  UpSample,
  conv,
  maybe_remat,
)

Array = jax.Array


class ORB(nn.Module):
  """Original-resolution block: `num_cab` CABs, a conv, a residual (official: ORB)."""

  cfg: BlockConfig
  num_cab: int

  @nn.compact
  def __call__(self, x: Array, alpha: Array) -> Array:
    y = CABStack(self.cfg, self.num_cab, name='cabs')(x, alpha)
    return conv(self.cfg, x.shape[-1], self.cfg.kernel_size, name='conv')(y) + x


class RawInformationMechanism(nn.Module):
  """Three ORBs at full resolution fed with stage 2's U-Net features.

  After ORB k it adds 1x1 convolutions of the stage-2 encoder and decoder
  outputs of level k, brought to full resolution by k - 1 UpSample blocks.
  Without stage 2 (`encoder_outs` None, an ablation) only the ORBs remain.
  """

  cfg: BlockConfig
  n_feat: int
  scale_orsnetfeats: int
  scale_unetfeats: int
  num_cab: int

  @nn.compact
  def __call__(
    self,
    x: Array,
    alpha: Array,
    encoder_outs: Optional[Sequence[Array]] = None,
    decoder_outs: Optional[Sequence[Array]] = None,
  ) -> Array:
    n, s = self.n_feat, self.scale_unetfeats
    width = n + self.scale_orsnetfeats

    def to_full(y: Array, level: int, kind: str) -> Array:
      if level == 2:
        y = UpSample(self.cfg, n, name=f'up_{kind}1')(y)
      elif level == 3:
        y = UpSample(self.cfg, n + s, name=f'up_{kind}2_0')(y)
        y = UpSample(self.cfg, n, name=f'up_{kind}2_1')(y)
      return conv(self.cfg, width, 1, name=f'conv_{kind}{level}')(y)

    orb = maybe_remat(ORB, self.cfg, 'level')
    for level in (1, 2, 3):
      x = orb(self.cfg, self.num_cab, name=f'orb{level}')(x, alpha)
      if encoder_outs is None:
        continue
      x = (
        x
        + to_full(encoder_outs[level - 1], level, 'enc')
        + to_full(decoder_outs[level - 1], level, 'dec')
      )
    return x
