"""Deblurring images with a trained FCN: the one code path for prediction.

`restore` and `restore_tiled` are pure, jit-friendly functions of a batch of
float images; `Deblurrer` wraps them for numpy images and image files; `load`
builds a `Deblurrer` from a workdir (`fcn_jax.load` forwards here):

  deblur = fcn_jax.load('runs/gopro', ensemble=True)
  sharp = deblur(blurry)                  # HxWx3 uint8 in, HxWx3 uint8 out
  deblur.deblur_file('blurry.jpg', 'sharp.png')

Images of any size are reflect-padded at the bottom and right to a multiple of 8
(as the release's test.py does for RealBlur), or of a larger `bucket` so that
images of many sizes share few compilations, and cropped back.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import checkpoint
from fcn_jax import cpu
from fcn_jax import image_io
from fcn_jax import models

Array = jax.Array
ArrayLike = Any  # np.ndarray or jax.Array
Params = Any
Transform = tuple[bool, bool, bool]

MULTIPLE = (
  8  # FCN halves the image three times (strips, quarters, U-Net levels)
)


def pad_to_multiple(x: ArrayLike, multiple: int = MULTIPLE) -> ArrayLike:
  """Reflect-pads height and width (axes -3, -2) at the bottom and right.

  Takes (N, H, W, C) or (H, W, C) arrays; numpy arrays are padded with numpy,
  anything else with `jnp`. The padding mirrors without repeating the edge
  pixel, like PyTorch's `F.pad(x, (0, padw, 0, padh), 'reflect')`; pads longer
  than the image (which PyTorch refuses) keep reflecting back and forth, as
  `np.pad` does. Crop back with `y[..., :h, :w, :]`.
  """
  h, w = x.shape[-3:-1]
  pad_h, pad_w = -h % multiple, -w % multiple
  if not pad_h and not pad_w:
    return x
  pads = [(0, 0)] * x.ndim
  pads[-3], pads[-2] = (0, pad_h), (0, pad_w)
  xp = np if isinstance(x, np.ndarray) else jnp
  return xp.pad(x, pads, mode='reflect')


# The 8 symmetries of the square as (transpose, flip rows, flip columns),
# applied in that order; the identity first.
DIHEDRAL: tuple[Transform, ...] = tuple(
  (t, fh, fw)
  for t in (False, True)
  for fh in (False, True)
  for fw in (False, True)
)


def _transform(x: Array, tf: Transform) -> Array:
  transpose, flip_h, flip_w = tf
  if transpose:
    x = jnp.swapaxes(x, -3, -2)
  if flip_h:
    x = jnp.flip(x, -3)
  if flip_w:
    x = jnp.flip(x, -2)
  return x


def _untransform(x: Array, tf: Transform) -> Array:
  transpose, flip_h, flip_w = tf
  if flip_w:
    x = jnp.flip(x, -2)
  if flip_h:
    x = jnp.flip(x, -3)
  if transpose:
    x = jnp.swapaxes(x, -3, -2)
  return x


def _forward(
  model: nn.Module, params: Params, x: Array, ensemble: bool
) -> Array:
  """Final-stage output for `x` (H, W multiples of 8), float32, not clipped.

  The ensemble maps the transforms of one shape (H x W, or W x H for the
  transposes) through one `lax.map`, so the network is traced once per shape
  and holds the activations of one transformed batch at a time, as plain
  inference does.
  """

  def run(v: Array) -> Array:
    return model.apply({'params': params}, v)[0].astype(jnp.float32)

  if not ensemble:
    return run(x)
  groups: dict[tuple[int, int], list[Transform]] = {}
  h, w = x.shape[-3:-1]
  for tf in DIHEDRAL:
    groups.setdefault((w, h) if tf[0] else (h, w), []).append(tf)
  total = jnp.zeros(x.shape, jnp.float32)
  for tfs in groups.values():
    outs = jax.lax.map(run, jnp.stack([_transform(x, tf) for tf in tfs]))
    for out, tf in zip(outs, tfs):
      total = total + _untransform(out, tf)
  return total / len(DIHEDRAL)


def restore(
  model: nn.Module, params: Params, x: ArrayLike, *, ensemble: bool = False
) -> Array:
  """Deblurs a batch: (N, H, W, 3) float in [0, 1], any H and W.

  Reflect-pads to a multiple of 8, runs `model` (test-time local statistics,
  if wanted, are the model's `tlc_train_size` field) and returns its final
  stage cropped back to H x W and clipped to [0, 1], float32. Jit it with
  `model` and `ensemble` static; each distinct input shape compiles once.

  Args:
    model: an `FCN` (or any module whose `apply` returns [final, ...]).
    params: its parameters.
    x: the blurry images.
    ensemble: x8 geometric self-ensemble: the mean of the outputs for the 8
      flips and 90-degree rotations of the (padded) input, each mapped back.
      Costs 8x the compute, not 8x the memory.
  """
  x = jnp.asarray(x, jnp.float32)
  h, w = x.shape[1:3]
  y = _forward(model, params, pad_to_multiple(x), ensemble)
  return jnp.clip(y[:, :h, :w], 0.0, 1.0)


def check_tiling(tile: int, overlap: int) -> None:
  """Raises ValueError unless tile is a positive multiple of 8 and 0 <= overlap < tile."""
  if tile <= 0 or tile % MULTIPLE:
    raise ValueError(
      f'tile must be a positive multiple of {MULTIPLE}, got {tile}'
    )
  if not 0 <= overlap < tile:
    raise ValueError(f'overlap must be in [0, tile={tile}), got {overlap}')


def _ramp(length: int) -> np.ndarray:
  """Raised-cosine ramp rising over `length` pixels, strictly inside (0, 1)."""
  return 0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)


def tile_layout(
  size: int, tile: int, overlap: int
) -> tuple[np.ndarray, np.ndarray]:
  """Tile starts along one axis of length `size`, and each tile's blend weights.

  Uses the fewest tiles of length `tile` that overlap by at least `overlap`,
  spread evenly so that the last one ends at the border (no tile sticks out,
  so every tile has the same shape and holds only image pixels). A tile's
  weight rises over its first `overlap` pixels and falls over its last
  (raised cosine), except at the image border; it is never 0.

  Returns:
    starts: int32 (T,); weights: float32 (T, min(tile, size)).
  """
  if size <= tile:
    return np.zeros(1, np.int32), np.ones((1, size), np.float32)
  n = math.ceil((size - overlap) / (tile - overlap))
  starts = np.array(
    [(i * (size - tile) + (n - 1) // 2) // (n - 1) for i in range(n)], np.int32
  )
  weights = np.ones((n, tile), np.float64)
  if overlap:
    ramp = _ramp(overlap)
    weights[1:, :overlap] = ramp
    weights[:-1, tile - overlap :] = np.minimum(
      weights[:-1, tile - overlap :], ramp[::-1]
    )
  return starts, weights.astype(np.float32)


def _coverage(starts: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
  total = np.zeros(size, np.float32)
  for start, weight in zip(starts, weights):
    total[start : start + len(weight)] += weight
  return total


def restore_tiled(
  model: nn.Module,
  params: Params,
  image: ArrayLike,
  *,
  tile: int,
  overlap: int,
  ensemble: bool = False,
) -> Array:
  """`restore` for images too large to run whole: overlapping tiles, blended.

  Pads the image like `restore`, cuts it into `tile` x `tile` tiles (smaller
  when the padded image is) overlapping by at least `overlap` pixels (see
  `tile_layout`), runs them one after another through a `lax.scan` (one
  compiled tile shape; memory is that of one tile), and blends them: each
  output pixel is the weighted mean of the tiles that cover it, with weights
  that ramp over the overlaps, so seams do not show. Jit it with `model`,
  `tile`, `overlap` and `ensemble` static.

  Tiles see different statistics than the whole image: FCN's channel attention
  pools each feature map over the whole input, and the query-key gate's
  LayerNorm normalises over the whole map, so with `tile` smaller than the
  image the result differs from whole-image inference. That is expected; it
  is not an error of the blending (a pointwise model tiles exactly). With TLC
  (`FCN(tlc_train_size=S)`, S <= tile) channel attention pools over local
  windows instead, which tiles see much as the whole image does; the
  LayerNorm stays global to each tile. With one tile covering the image the
  result equals `restore`.

  Args:
    model: as for `restore`.
    params: its parameters.
    image: (N, H, W, 3) float in [0, 1], any H and W.
    tile: tile side, a multiple of 8.
    overlap: minimum overlap of neighbouring tiles in pixels, < tile.
    ensemble: as for `restore`, per tile.
  """
  check_tiling(tile, overlap)
  x = jnp.asarray(image, jnp.float32)
  n, h, w, c = x.shape
  xp = pad_to_multiple(x)
  hp, wp = xp.shape[1:3]
  ys, wy = tile_layout(hp, tile, overlap)
  xs, wx = tile_layout(wp, tile, overlap)
  th, tw = wy.shape[1], wx.shape[1]
  iy, ix = np.divmod(np.arange(len(ys) * len(xs)), len(xs))

  def add_tile(acc: Array, tile_in: tuple[Array, ...]) -> tuple[Array, None]:
    y0, x0, wyi, wxi = tile_in
    corner = (0, y0, x0, 0)
    piece = jax.lax.dynamic_slice(xp, corner, (n, th, tw, c))
    out = _forward(model, params, piece, ensemble)
    out = out * (wyi[:, None] * wxi[None, :])[None, :, :, None]
    out = out + jax.lax.dynamic_slice(acc, corner, out.shape)
    return jax.lax.dynamic_update_slice(acc, out, corner), None

  acc, _ = jax.lax.scan(
    add_tile, jnp.zeros(xp.shape, jnp.float32), (ys[iy], xs[ix], wy[iy], wx[ix])
  )
  # Tile (r, c) weighs wy[r](y) * wx[c](x), so the weights sum to a product.
  norm = np.outer(_coverage(ys, wy, hp)[:h], _coverage(xs, wx, wp)[:w])
  return jnp.clip(acc[:, :h, :w] / norm[None, :, :, None], 0.0, 1.0)


# Built on first use, once JAX's backend is known (cpu.compiler_options).
# Models are hashable: equal models (and options) share one trace per shape.
@functools.cache
def _restore_jit() -> Any:
  return jax.jit(
    restore,
    static_argnums=0,
    static_argnames='ensemble',
    compiler_options=cpu.compiler_options(),
  )


@functools.cache
def _restore_tiled_jit() -> Any:
  return jax.jit(
    restore_tiled,
    static_argnums=0,
    static_argnames=('tile', 'overlap', 'ensemble'),
    compiler_options=cpu.compiler_options(),
  )


def check_bucket(bucket: int) -> None:
  """Raises ValueError unless bucket is a positive multiple of 8."""
  if bucket <= 0 or bucket % MULTIPLE:
    raise ValueError(
      f'bucket must be a positive multiple of {MULTIPLE}, got {bucket}'
    )


def _abstract(tree: Any) -> tuple[Any, ...]:
  """A hashable description of a pytree: structure, shapes, dtypes, placement."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple(
    (np.shape(v), np.result_type(v), getattr(v, 'sharding', None))
    for v in leaves
  )


# Compiled executables of every Deblurrer, by (function, model, options,
# parameter shapes, input shape): equal models with equal options share them.
_COMPILED: dict[tuple[Any, ...], Any] = {}


class Deblurrer:
  """A model, its parameters and the inference options, for numpy images.

  Images are reflect-padded at the bottom and right to a multiple of `bucket`
  and cropped back. Each distinct padded shape is compiled once, ahead of
  time (`restore`, or `restore_tiled` when `tile` is set, with the model
  static), and the executable is shared by every Deblurrer of an equal model
  and options; `compilations` records the shapes this one compiled and the
  seconds each took.

  `bucket=8` pads exactly as the release's test.py does. A larger bucket
  (e.g. 128) makes a folder of photos of many sizes compile a few times
  instead of once per size, at the cost of computing the extra padding; the
  result differs slightly from `bucket=8`, because FCN splits the padded image
  into strips, quarters and halves and its channel attention and LayerNorm
  pool over the whole padded map (see README, Prediction).

  Attributes:
    model: the FCN, with `tlc_train_size` applied.
    params: its parameters.
    ensemble: x8 geometric self-ensemble.
    tile, overlap: tiled inference (see `restore_tiled`); None: whole images.
    bucket: images are padded to a multiple of this (a multiple of 8).
    compilations: (padded input shape, seconds) for each compilation.
  """

  def __init__(
    self,
    model: nn.Module,
    params: Params,
    *,
    ensemble: bool = False,
    tile: Optional[int] = None,
    overlap: int = 32,
    tlc_train_size: Optional[int] = None,
    bucket: int = MULTIPLE,
  ):
    if tlc_train_size is not None:
      model = model.clone(tlc_train_size=tlc_train_size)
    if tile is not None:
      check_tiling(tile, overlap)
    check_bucket(bucket)
    self.model = model
    self.params = params
    self.ensemble = ensemble
    self.tile = tile
    self.overlap = overlap
    self.bucket = bucket
    self.compilations: list[tuple[tuple[int, ...], float]] = []
    if tile is None:
      self._jit, self._options = _restore_jit(), dict(ensemble=ensemble)
    else:
      self._jit = _restore_tiled_jit()
      self._options = dict(tile=tile, overlap=overlap, ensemble=ensemble)
    self._key = (
      tile is None,
      model,
      tuple(sorted(self._options.items())),
      _abstract(params),
    )

  def _executable(self, x: np.ndarray) -> Any:
    key = self._key + (x.shape, x.dtype)
    compiled = _COMPILED.get(key)
    if compiled is None:
      start = time.perf_counter()
      compiled = self._jit.lower(
        self.model, self.params, x, **self._options
      ).compile()
      self.compilations.append((x.shape, time.perf_counter() - start))
      _COMPILED[key] = compiled
    return compiled

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """Deblurs one image (shapes, dtypes as `image_io.to_float_rgb` takes).

    Returns:
      HxWx3: uint8 if `image` was uint8 or uint16 (quantised as
      `image_io.to_uint8`), else float32 in [0, 1].
    """
    x, integer = image_io.to_float_rgb(image)
    h, w = x.shape[:2]
    x = pad_to_multiple(x, self.bucket)[None]
    y = np.asarray(self._executable(x)(self.params, x))[0, :h, :w]
    return image_io.to_uint8(y) if integer else y

  def deblur_file(self, in_path: str, out_path: str) -> None:
    """Deblurs the image file `in_path` (see `image_io.read_image`) into an
    RGB 8-bit PNG."""
    image = image_io.read_image(in_path)
    image_io.write_png(out_path, image_io.to_uint8(self(image)))


def load(
  workdir: str,
  *,
  ensemble: bool = False,
  tile: Optional[int] = None,
  overlap: int = 32,
  tlc_train_size: Optional[int] = None,
  dtype: Optional[str] = None,
  bucket: int = MULTIPLE,
) -> Deblurrer:
  """A `Deblurrer` for the checkpoint `checkpoint.find(workdir)` picks.

  Args:
    workdir: a training or conversion workdir.
    ensemble, tile, overlap, tlc_train_size, bucket: see `Deblurrer`.
    dtype: computation dtype override ('bfloat16', 'float32'); None: the
      checkpoint's.
  """
  params, config = checkpoint.load_params(workdir)
  overrides = {} if dtype is None else {'dtype': dtype}
  model = models.model_from_config(config, **overrides)
  return Deblurrer(
    model,
    params,
    ensemble=ensemble,
    tile=tile,
    overlap=overlap,
    tlc_train_size=tlc_train_size,
    bucket=bucket,
  )
