"""The edge loss's zero-insertion is a mask multiply: same values, no scatter."""

import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import losses


def _scatter_laplacian_residual(x):
  # The previous implementation, with a scatter.
  blurred = losses._gauss_blur(x)
  kept = jnp.zeros_like(blurred).at[:, ::2, ::2].set(4 * blurred[:, ::2, ::2])
  return x - losses._gauss_blur(kept)


def test_mask_multiply_equals_the_scatter():
  rng = np.random.default_rng(0)
  for shape in [(2, 16, 24, 3), (1, 15, 9, 3)]:
    x = jnp.asarray(rng.random(shape, np.float32))
    np.testing.assert_array_equal(
      losses.laplacian_residual(x), _scatter_laplacian_residual(x)
    )
  p, t = (jnp.asarray(rng.random((2, 16, 16, 3), np.float32)) for _ in '12')
  old = losses.charbonnier(
    _scatter_laplacian_residual(p), _scatter_laplacian_residual(t)
  )
  np.testing.assert_array_equal(losses.edge_loss(p, t), old)


def test_no_scatter_in_the_lowered_edge_loss():
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  text = jax.jit(jax.grad(losses.edge_loss)).lower(x, x).as_text()
  assert 'scatter' not in text and 'gather' not in text
