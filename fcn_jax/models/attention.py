"""The paper's attention mechanisms between stages."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcn_jax.models.layers import BlockConfig, conv

Array = jax.Array


def layer_norm_per_image(x: Array, eps: float = 1e-5) -> Array:
  """LayerNorm without affine parameters over H, W and C of each image.

  Deviation from the release, which builds `nn.LayerNorm(x.size())` and so
  normalises over the batch axis too: the two agree at batch size 1 (the
  setting of the paper's evaluation), and per-image statistics keep each
  image's output independent of the rest of its batch, which sharded
  evaluation with padded batches relies on.
  """
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2, 3), keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2, 3), keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class QueryKeyGate(nn.Module):
  """Query-key mechanism with enhanced feature extraction (paper Figs. 3b, 4a).

  Official: `attention_down`, `attention_up` and the LayerNorm in Net.forward.
  The key is the processing block's map F; the query is
  sigmoid(up(down(LayerNorm(F)))) with 1x1 convolutions n -> n/2 -> n.
  Returns query * key, which the caller adds to the stage-1 features.
  """

  cfg: BlockConfig
  n_feat: int

  @nn.compact
  def __call__(self, key: Array) -> Array:
    q = conv(self.cfg, self.n_feat // 2, 1, name='down')(
      layer_norm_per_image(key)
    )
    q = nn.sigmoid(conv(self.cfg, self.n_feat, 1, name='up')(q))
    return q * key


class MultiStageAttention(nn.Module):
  """Multi-stage attention mechanism (paper Fig. 4b; official: SAM, 1x1 convs).

  Returns the features passed to the next stage and this stage's image (in
  `x_img`'s dtype, float32 in FCN, whatever the computation dtype).
  """

  cfg: BlockConfig
  n_feat: int

  @nn.compact
  def __call__(self, x: Array, x_img: Array) -> tuple[Array, Array]:
    x1 = conv(self.cfg, self.n_feat, 1, name='conv1')(x)
    # The stage image's residual addition in float32 (x_img is float32).
    img = conv(self.cfg, 3, 1, name='conv2')(x).astype(jnp.float32) + x_img
    x2 = nn.sigmoid(conv(self.cfg, self.n_feat, 1, name='conv3')(img))
    return x1 * x2 + x, img
