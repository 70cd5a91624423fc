"""XLA:CPU tuning for FCN: a faster kernel gradient, compiler options.

Nothing here is architecture (the blocks are in `fcn_jax.models`); it makes
the same functions faster on CPU and leaves GPUs and TPUs to XLA's defaults:

* `conv_same`: the model's bias-free 'same' convolution. On CPU its kernel
  gradient comes from `conv_same_cpu_grad` (Winograd F(4x4, 3x3) for 3x3
  kernels, one matrix product for 1x1) where `use_cpu_grad` says it applies.
* `compiler_options`: `jax.jit(..., compiler_options=...)` for programs that
  run FCN (XLA:CPU's runtime convolutions instead of YNNPACK fusions).

BENCHMARKS.md has the measurements behind each choice.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _conv_same(x: Array, w: Array, precision) -> Array:
  """XLA's own 'same' NHWC convolution (HWIO kernel, stride 1)."""
  return jax.lax.conv_general_dilated(
    x,
    w,
    (1, 1),
    'SAME',
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    precision=precision,
  )


# Winograd F(4x4, 3x3) (Lavin & Gray, 2016): a 3x3 correlation over a 6x6 input
# tile d gives the 4x4 output tile A^T [(G w G^T) * (B^T d B)] A.
_WINO_BT = np.array(
  [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
  ]
)
_WINO_G = np.array(
  [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
  ]
)
_WINO_AT = np.array(
  [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
  ]
)


def _combine(matrix: np.ndarray, parts: Sequence[Array]) -> list[Array]:
  """[sum_j matrix[i, j] * parts[j] for each row i], skipping zero terms."""
  out = []
  for row in matrix:
    terms = [
      p if c == 1 else -p if c == -1 else float(c) * p
      for c, p in zip(row, parts)
      if c != 0
    ]
    out.append(functools.reduce(jnp.add, terms))
  return out


def _tile_transform(x: Array, matrix: np.ndarray, tile: int) -> Array:
  """matrix . t . matrix^T for every tile t (size matrix.shape[1], stride 4).

  (N, H', W', C) -> (36, N*T, C), the 36 transformed positions first. Rows then
  columns, the intermediate materialised: fused in one pass XLA:CPU recomputes
  the row transform for every output and is 3x slower.
  """
  n, h, w, c = x.shape
  th, tw = (h - tile) // 4 + 1, (w - tile) // 4 + 1
  rows = _combine(matrix, [x[:, i : i + 4 * th : 4] for i in range(tile)])
  rows = jax.lax.optimization_barrier(jnp.stack(rows, 1))  # (N, 6, th, W', C)
  cols = _combine(
    matrix, [rows[:, :, :, j : j + 4 * tw : 4] for j in range(tile)]
  )
  out = jnp.stack(cols, 2)  # (N, 6, 6, th, tw, C)
  return out.transpose(1, 2, 0, 3, 4, 5).reshape(36, n * th * tw, c)


def winograd_kernel_grad(x: Array, g: Array) -> Array:
  """Kernel gradient of a 3x3 'same' convolution by Winograd F(4x4, 3x3).

  x: (N, H, W, C) input, g: (N, H, W, O) output gradient, H and W multiples of
  4; returns the (3, 3, C, O) gradient. The forward formula is linear in the
  kernel, so its transpose gives sum_tiles G^T [(A g A^T) * (B^T d B)] G: 36
  products (C x T)(T x O) over the T = HW/16 tiles, 4x fewer operations than
  the direct sum. Same values up to rounding (relative 1e-5 in float32).
  """
  if x.shape[1] % 4 or x.shape[2] % 4:
    raise ValueError(
      'winograd_kernel_grad needs sides that are multiples '
      f'of 4, got {x.shape[1]}x{x.shape[2]}'
    )
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  v = _tile_transform(xp, _WINO_BT, 6)  # B^T d B  (36, T, C)
  p = _tile_transform(g, _WINO_AT.T, 4)  # A g A^T  (36, T, O)
  m = jax.lax.dot_general(
    v, p, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32
  )  # (36, C, O)
  m = m.reshape(6, 6, *m.shape[1:])
  rows = _combine(_WINO_G.T, list(m))  # G^T m G
  return jnp.stack([jnp.stack(_combine(_WINO_G.T, list(r))) for r in rows])


def pointwise_kernel_grad(x: Array, g: Array) -> Array:
  """Kernel gradient of a 1x1 convolution: one product x^T g, (1, 1, C, O)."""
  return jnp.einsum('nhwc,nhwo->co', x, g, preferred_element_type=jnp.float32)[
    None, None
  ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_same_cpu_grad(x: Array, w: Array, precision=None) -> Array:
  """A 'same' NHWC convolution with a faster kernel gradient on XLA:CPU.

  The forward pass and the input gradient are XLA's own convolutions. XLA:CPU
  computes the kernel gradient as a convolution with an H x W window: 4-8x the
  forward pass's time. Here 1x1 kernels take one matrix product and 3x3
  kernels `winograd_kernel_grad` (about 1.6x the forward pass).
  """
  return _conv_same(x, w, precision)


def _conv_cpu_fwd(x, w, precision):
  return _conv_same(x, w, precision), (x, w)


def _conv_cpu_bwd(precision, residuals, g):
  x, w = residuals
  if w.shape[:2] not in ((1, 1), (3, 3)):
    raise ValueError(
      f'conv_same_cpu_grad supports 1x1 and 3x3 kernels, got {w.shape[:2]}'
    )
  _, input_vjp = jax.vjp(lambda v: _conv_same(v, w, precision), x)
  (dx,) = input_vjp(g)
  kernel_grad = (
    pointwise_kernel_grad if w.shape[0] == 1 else winograd_kernel_grad
  )
  return dx, kernel_grad(x, g).astype(w.dtype)


conv_same_cpu_grad.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


# Maps smaller than this keep XLA's kernel gradient: there it is cheap, and the
# custom one adds compile time (measured on the demo config: 1024 gives
# 0.535 s per step and 23 s to compile, 256 0.578 s and 27 s, 0 0.561 s and
# 30 s).
MIN_CPU_GRAD_PIXELS = 1024


def use_cpu_grad(x: Array, kernel: Array) -> bool:
  """Whether `conv_same_cpu_grad` applies: on CPU, for maps of at least
  MIN_CPU_GRAD_PIXELS, 1x1 kernels and float32 3x3 kernels on maps whose sides
  are multiples of 4 with at least 16 input channels (reading the 3-channel
  image, XLA's own is faster). Never for symbolic shapes (jax.export of
  inference, where no gradient is taken)."""
  if any(map(jax.export.is_symbolic_dim, x.shape[1:3])):
    return False
  if (
    jax.default_backend() != 'cpu'
    or x.shape[1] * x.shape[2] < MIN_CPU_GRAD_PIXELS
  ):
    return False
  k, _, c, _ = kernel.shape
  if k == 1:
    return True
  return (
    k == 3
    and kernel.dtype == jnp.float32
    and c >= 16
    and x.shape[1] % 4 == 0
    and x.shape[2] % 4 == 0
  )


# XLA:CPU puts large convolutions in YNNPACK fusions by default; its runtime
# (Eigen) convolution is faster on FCN's shapes. See `compiler_options`.
_CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


@functools.cache
def _cpu_options_accepted() -> bool:
  """Whether this jaxlib's XLA:CPU knows the options (they are experimental)."""
  try:
    one = jax.device_put(
      np.ones((), np.float32), jax.local_devices(backend='cpu')[0]
    )
    jax.jit(lambda v: v + 1, compiler_options=_CPU_COMPILER_OPTIONS).lower(
      one
    ).compile()
  except jax.errors.JaxRuntimeError as e:
    logging.warning(
      'XLA:CPU rejects %s (%s); compiling with its defaults.',
      _CPU_COMPILER_OPTIONS,
      str(e).splitlines()[0],
    )
    return False
  return True


def compiler_options(backend: Optional[str] = None) -> Optional[dict[str, str]]:
  """`jax.jit(..., compiler_options=...)` for programs that run FCN.

  On CPU, XLA's runtime convolutions instead of YNNPACK fusions: the same
  values, 10% faster inference and 4-9% faster training steps of the
  full-width model at 128x128 (one 3x3 96->96 layer: 11.3 -> 9.3 ms; see
  BENCHMARKS.md). Unlike XLA_FLAGS it applies to one compilation only. None on
  other backends, and (with a warning) with a jaxlib that no longer knows the
  option. `backend` defaults to JAX's default backend.
  """
  if (backend or jax.default_backend()) == 'cpu' and _cpu_options_accepted():
    return dict(_CPU_COMPILER_OPTIONS)
  return None


def conv_same(x: Array, kernel: Array, precision=None) -> Array:
  """A bias-free 'same' NHWC convolution (HWIO kernel, stride 1).

  XLA's convolution; on CPU, with the kernel gradient of `conv_same_cpu_grad`
  where `use_cpu_grad` says it applies. The values are XLA's either way.
  """
  if use_cpu_grad(x, kernel):
    return conv_same_cpu_grad(x, kernel, precision)
  return _conv_same(x, kernel, precision)
