"""Charbonnier, the edge loss and the trust-ratio objective on known arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import losses


def test_charbonnier_hand_computed():
  pred = jnp.array([0.0, 1.0, 0.5, 0.25]).reshape(1, 2, 2, 1)
  target = jnp.array([0.0, 0.0, 0.5, 0.0]).reshape(1, 2, 2, 1)
  eps = 1e-3
  expected = (eps + np.sqrt(1 + eps**2) + eps + np.sqrt(0.0625 + eps**2)) / 4
  assert float(losses.charbonnier(pred, target, eps)) == pytest.approx(
    expected, rel=1e-6
  )


def _numpy_laplacian_residual(x):
  """Float64 reference written from the release's description, with loops."""
  k1 = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
  k = np.outer(k1, k1)

  def blur(img):
    padded = np.pad(img, ((2, 2), (2, 2)), mode='edge')
    out = np.zeros_like(img)
    for i in range(img.shape[0]):
      for j in range(img.shape[1]):
        out[i, j] = np.sum(padded[i : i + 5, j : j + 5] * k)
    return out

  blurred = blur(x)
  kept = np.zeros_like(blurred)
  kept[::2, ::2] = 4 * blurred[::2, ::2]
  return x - blur(kept)


def test_edge_loss_against_loop_reference():
  rng = np.random.default_rng(0)
  x, y = rng.random((2, 7, 6)), rng.random((2, 7, 6))
  ref_x = _numpy_laplacian_residual(x[0])
  ref_y = _numpy_laplacian_residual(y[0])
  ours = losses.laplacian_residual(jnp.asarray(x[:1, :, :, None], jnp.float32))
  np.testing.assert_allclose(ours[0, :, :, 0], ref_x, atol=1e-6)
  expected = np.mean(np.sqrt((ref_x - ref_y) ** 2 + 1e-6))
  got = losses.edge_loss(
    jnp.asarray(x[:1, :, :, None]), jnp.asarray(y[:1, :, :, None])
  )
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_edge_loss_ignores_constant_offsets_inside():
  # A constant image is fully predicted by its pyramid away from the borders.
  residual = losses.laplacian_residual(jnp.full((1, 12, 12, 1), 0.7))
  np.testing.assert_allclose(residual[0, 2:-2, 2:-2, 0], 0.0, atol=1e-6)
  x = jnp.asarray(np.random.default_rng(1).random((1, 8, 8, 3)), jnp.float32)
  assert float(losses.edge_loss(x, x)) == pytest.approx(1e-3, rel=1e-4)


def test_stage_losses_and_fixed_trust():
  rng = np.random.default_rng(2)
  target = jnp.asarray(rng.random((2, 8, 8, 3)), jnp.float32)
  outputs = [target + d for d in (0.0, 0.1, 0.2)]
  per_stage = losses.stage_losses(outputs, target)
  assert per_stage.shape == (3,)
  assert per_stage[0] < per_stage[1] < per_stage[2]
  # Stage 0 is exact: both terms are Charbonnier of zero, eps each.
  assert float(per_stage[0]) == pytest.approx(1e-3 * 1.05, rel=1e-4)
  total = losses.combine(per_stage, jnp.zeros(3), trust='fixed', tau=0.02)
  assert float(total) == pytest.approx(float(per_stage.sum()))
  with pytest.raises(ValueError, match="'fixed' or 'learned'"):
    losses.combine(per_stage, jnp.zeros(3), trust='adaptive', tau=0.02)


def test_learned_trust_optimum_is_tau_over_loss():
  stage = jnp.array([0.05, 0.1, 0.4])
  tau = 0.02
  optimum = jnp.log((tau / stage) / (1 - tau / stage))  # logit(tau / L)
  grad = jax.grad(lambda z: losses.combine(stage, z, trust='learned', tau=tau))(
    optimum
  )
  np.testing.assert_allclose(grad, 0.0, atol=1e-7)
  # Away from it the gradient points back to it: r below the optimum grows.
  grad = jax.grad(lambda z: losses.combine(stage, z, trust='learned', tau=tau))(
    optimum - 1
  )
  assert (grad < 0).all()
  r = losses.trust_ratios(jnp.array([-30.0, 0.0, 30.0]))
  assert (r > 0).all() and (r <= 1).all()
