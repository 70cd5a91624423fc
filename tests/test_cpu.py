"""fcn_jax.cpu: the XLA:CPU kernel gradient and compiler options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import cpu


@pytest.mark.parametrize(
  'k,shape', [(3, (2, 8, 12)), (3, (1, 16, 4)), (1, (2, 6, 10))]
)
def test_cpu_kernel_gradient_equals_xla_convolution(k, shape):
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.standard_normal((*shape, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 5, 7)), jnp.float32)
  ref = lambda x, w: jnp.sum(
    jnp.sin(
      jax.lax.conv_general_dilated(
        x,
        w,
        (1, 1),
        'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision='highest',
      )
    )
  )
  ours = lambda x, w: jnp.sum(jnp.sin(cpu.conv_same_cpu_grad(x, w, 'highest')))
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-6)
  (dx, dw), (rdx, rdw) = (
    jax.grad(ours, (0, 1))(x, w),
    jax.grad(ref, (0, 1))(x, w),
  )
  np.testing.assert_allclose(dx, rdx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    dw, rdw, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(rdw)))
  )


def _conv_tanh(x, w):
  return jnp.tanh(cpu._conv_same(x, w, None) + x)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU options')
def test_cpu_compiler_options_drop_ynnpack_fusions_and_keep_values():
  # A 96-channel convolution (FCN's width) sits in a YNNPACK fusion by default;
  # the options compile it as XLA's runtime convolution, with the same values.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, 32, 32, 96), np.float32))
  w = jnp.asarray(rng.standard_normal((3, 3, 96, 96), np.float32) / 30)
  default = jax.jit(_conv_tanh).lower(x, w).compile()
  ours = (
    jax.jit(_conv_tanh, compiler_options=cpu.compiler_options())
    .lower(x, w)
    .compile()
  )
  assert 'ynn_fusion' in default.as_text()
  assert 'ynn_fusion' not in ours.as_text()
  np.testing.assert_allclose(ours(x, w), default(x, w), atol=1e-5)


def test_compiler_options_only_on_cpu():
  assert cpu.compiler_options('cpu') == {
    'xla_cpu_experimental_ynn_fusion_type': ''
  }
  assert (
    cpu.compiler_options('gpu') is None and cpu.compiler_options('tpu') is None
  )
  assert cpu.compiler_options() == cpu.compiler_options(jax.default_backend())


def test_compiler_options_dropped_when_xla_does_not_know_them(monkeypatch):
  monkeypatch.setattr(
    cpu, '_CPU_COMPILER_OPTIONS', {'xla_cpu_no_such_option': ''}
  )
  cpu._cpu_options_accepted.cache_clear()
  try:
    assert cpu.compiler_options('cpu') is None
  finally:
    cpu._cpu_options_accepted.cache_clear()


def test_cpu_kernel_gradient_only_where_it_applies():
  x = jnp.zeros((1, 40, 40, 32))
  on_cpu = jax.default_backend() == 'cpu'
  assert cpu.use_cpu_grad(x, jnp.zeros((3, 3, 32, 3))) == on_cpu
  assert cpu.use_cpu_grad(x, jnp.zeros((1, 1, 32, 32))) == on_cpu
  assert cpu.use_cpu_grad(x[:, :38], jnp.zeros((1, 1, 32, 32))) == on_cpu
  assert not cpu.use_cpu_grad(x[..., :3], jnp.zeros((3, 3, 3, 32)))  # the image
  assert not cpu.use_cpu_grad(x[:, :38], jnp.zeros((3, 3, 32, 32)))  # 38 % 4
  assert not cpu.use_cpu_grad(
    x[:, :16, :16], jnp.zeros((3, 3, 32, 32))
  )  # small
  assert not cpu.use_cpu_grad(x, jnp.zeros((3, 3, 32, 32), jnp.bfloat16))
