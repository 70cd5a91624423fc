"""The U-Net of stages 1 and 2 (paper: local feature catcher; official: Encoder, Decoder)."""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax

from fcn_jax.models.layers import (
  BlockConfig,
  CAB,
  CABStack,
  DownSample,
  UpSample,
  conv,
  maybe_remat,
)

Array = jax.Array


class Encoder(nn.Module):
  """Three levels of two CABs, widths n, n+s, n+2s (official: Encoder).

  With `csff` (stage 2 only) each level adds 1x1 convolutions of the previous
  stage's encoder and decoder outputs (cross-stage feature fusion).
  """

  cfg: BlockConfig
  n_feat: int
  scale_unetfeats: int
  csff: bool = False

  @nn.compact
  def __call__(
    self,
    x: Array,
    alpha: Array,
    encoder_outs: Optional[Sequence[Array]] = None,
    decoder_outs: Optional[Sequence[Array]] = None,
  ) -> list[Array]:
    widths = [self.n_feat + i * self.scale_unetfeats for i in range(3)]
    outs = []
    for level, width in enumerate(widths, start=1):
      if level > 1:
        x = DownSample(self.cfg, width, name=f'down{level - 1}{level}')(x)
      x = maybe_remat(CABStack, self.cfg, 'level')(
        self.cfg, 2, name=f'level{level}'
      )(x, alpha)
      if self.csff:
        x = (
          x
          + conv(self.cfg, width, 1, name=f'csff_enc{level}')(
            encoder_outs[level - 1]
          )
          + conv(self.cfg, width, 1, name=f'csff_dec{level}')(
            decoder_outs[level - 1]
          )
        )
      outs.append(x)
    return outs


class Decoder(nn.Module):
  """Mirror of the encoder with CAB-refined skips (official: Decoder)."""

  cfg: BlockConfig
  n_feat: int
  scale_unetfeats: int

  @nn.compact
  def __call__(
    self, encoder_outs: Sequence[Array], alpha: Array
  ) -> list[Array]:
    enc1, enc2, enc3 = encoder_outs
    n, s = self.n_feat, self.scale_unetfeats
    stack = maybe_remat(CABStack, self.cfg, 'level')
    cab = maybe_remat(CAB, self.cfg, 'block')
    dec3 = stack(self.cfg, 2, name='level3')(enc3, alpha)
    x = UpSample(self.cfg, n + s, name='up32')(dec3) + cab(
      self.cfg, name='skip_attn2'
    )(enc2, alpha)
    dec2 = stack(self.cfg, 2, name='level2')(x, alpha)
    x = UpSample(self.cfg, n, name='up21')(dec2) + cab(
      self.cfg, name='skip_attn1'
    )(enc1, alpha)
    dec1 = stack(self.cfg, 2, name='level1')(x, alpha)
    return [dec1, dec2, dec3]
