"""The training objective: per-stage Charbonnier + edge loss, combined by trust ratios.

Official: losses.py (CharbonnierLoss, EdgeLoss) and train.py's sum over stages;
the paper's Eq. 1 weights the stages with trust ratios r_s in (0, 1).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_GAUSS_1D = np.array([0.05, 0.25, 0.4, 0.25, 0.05], np.float32)


def charbonnier(pred: Array, target: Array, eps: float = 1e-3) -> Array:
  """mean(sqrt((pred - target)^2 + eps^2)), a smooth L1 (official: CharbonnierLoss)."""
  d = pred.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(jnp.sqrt(d * d + eps * eps))


def _gauss_blur(x: Array) -> Array:
  """The release's 5x5 Gaussian, [.05 .25 .4 .25 .05] outer itself, replicate padding."""
  x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='edge')
  h, w = x.shape[1] - 4, x.shape[2] - 4
  # Separable: the 2-D kernel is the outer product of the 1-D one.
  x = sum(float(k) * x[:, i : i + h] for i, k in enumerate(_GAUSS_1D))
  return sum(float(k) * x[:, :, i : i + w] for i, k in enumerate(_GAUSS_1D))


def laplacian_residual(x: Array) -> Array:
  """x minus its one-level Laplacian-pyramid reconstruction (official: laplacian_kernel).

  Blur, keep every second pixel, zero-insert back with weight 4, blur again.
  """
  blurred = _gauss_blur(x)
  # A fixed 0/4 mask on the even rows and columns (no scatter in the HLO).
  h, w = x.shape[1:3]
  mask = np.zeros((1, h, w, 1), np.float32)
  mask[:, ::2, ::2] = 4.0
  kept = blurred * mask
  return x - _gauss_blur(kept)


def edge_loss(pred: Array, target: Array, eps: float = 1e-3) -> Array:
  """Charbonnier between the Laplacian residuals (official: EdgeLoss)."""
  return charbonnier(
    laplacian_residual(pred.astype(jnp.float32)),
    laplacian_residual(target.astype(jnp.float32)),
    eps,
  )


def stage_losses(
  outputs: Sequence[Array],
  target: Array,
  *,
  eps: float = 1e-3,
  edge_weight: float = 0.05,
) -> Array:
  """L_s = Charbonnier + edge_weight * edge loss of each stage image, shape (3,)."""
  return jnp.stack(
    [
      charbonnier(o, target, eps) + edge_weight * edge_loss(o, target, eps)
      for o in outputs
    ]
  )


def trust_ratios(logits: Array) -> Array:
  """r_s = sigmoid(logit_s), bounded to (0, 1) as the paper's Eq. 1 requires."""
  return jax.nn.sigmoid(logits)


def combine(losses: Array, logits: Array, *, trust: str, tau: float) -> Array:
  """The objective that combines the stage losses.

  'fixed': sum_s L_s, the release's objective (every r_s = 1; the logits get
  no gradient).
  'learned': sum_s r_s L_s - tau * sum_s log r_s. Minimising sum_s r_s L_s over
  r alone sends every r_s to 0, so Eq. 1 needs a counterweight; the log
  barrier is the uncertainty weighting of Kendall et al. (2018): for fixed
  losses its minimum is r_s = min(1, tau / L_s), so a stage's weight is
  inversely proportional to its current loss (harder stages count less, none
  vanishes), bounded by the sigmoid. The network's gradient is that of
  sum_s r_s L_s; with Adam only the ratios between the r_s matter.
  """
  if trust == 'fixed':
    return jnp.sum(losses)
  if trust == 'learned':
    r = trust_ratios(logits)
    return jnp.sum(r * losses) - tau * jnp.sum(jnp.log(r))
  raise ValueError(
    f"config.loss.trust must be 'fixed' or 'learned', got {trust!r}"
  )
