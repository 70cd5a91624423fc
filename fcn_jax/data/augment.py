"""The release's augmentation of a training pair, as TF ops.

A random paired crop (images smaller than the crop are reflect-padded at the
bottom/right; or, with patch='resize', the whole image resized as in the
paper's text), with probability 1/3 PIL's saturation enhancement (a blend with
the luma image, on uint8, reproduced exactly) by a factor uniform in
[0.8, 1.2] applied to both images, then the release's symmetry draw of 9
outcomes: the identity with probability 2/9, each other symmetry of the
square with 1/9. Every draw comes from stateless TF random ops seeded by the
sample's seed, so a sample depends only on (seed, its number).
"""

from __future__ import annotations

import tensorflow as tf


def reflect(positions: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """Maps positions into [0, size) by mirror reflection (edge not repeated)."""
  period = tf.maximum(2 * size - 2, 1)
  m = tf.math.floormod(positions, period)
  return tf.minimum(m, period - m)


def saturate(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's `ImageEnhance.Color(image).enhance(factor)` on uint8 RGB, exactly.

  The release's saturation jitter (torchvision's `adjust_saturation` on a PIL
  image): a blend of the image with its ITU-R 601-2 luma, both uint8.
  Pillow computes the luma in 16-bit fixed point with rounding,
  L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, and the blend in float32,
  L + factor * (x - L), truncated to an integer and clipped to [0, 255].
  Both are reproduced operation for operation (checked bit for bit against
  Pillow 12.1 in tests/test_data.py).

  Args:
    image: (..., 3) uint8.
    factor: float32 scalar; 0 gives the luma image, 1 the image.

  Returns:
    (..., 3) uint8.
  """
  rgb = tf.cast(image, tf.int32)
  luma = tf.bitwise.right_shift(
    rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768, 16
  )
  gray = tf.cast(luma, tf.float32)[..., None]
  blend = gray + tf.cast(factor, tf.float32) * (tf.cast(rgb, tf.float32) - gray)
  return tf.cast(tf.clip_by_value(tf.floor(blend), 0.0, 255.0), tf.uint8)


# The release's symmetry outcomes randint(0, 8) = 0..8, as (flip rows, flip
# columns, then counter-clockwise quarter turns): identity, up-down flip,
# left-right flip, 90, 180 and 270 degree rotations, the two flips followed by
# a 90 degree rotation, and identity again (outcome 8 has no branch). So
# identity has probability 2/9 and each other symmetry of the square 1/9.
SYMMETRIES = (
  (0, 0, 0),
  (1, 0, 0),
  (0, 1, 0),
  (0, 0, 1),
  (0, 0, 2),
  (0, 0, 3),
  (1, 0, 1),
  (0, 1, 1),
  (0, 0, 0),
)


def apply_symmetry(image: tf.Tensor, outcome: tf.Tensor) -> tf.Tensor:
  """The symmetry of release outcome `outcome` (0..8) on (H, W, C) `image`."""
  table = tf.constant(SYMMETRIES, tf.int32)[outcome]
  image = tf.cond(
    table[0] > 0, lambda: tf.reverse(image, axis=[0]), lambda: image
  )
  image = tf.cond(
    table[1] > 0, lambda: tf.reverse(image, axis=[1]), lambda: image
  )
  return tf.image.rot90(image, table[2])


def resize_pair(pair: tf.Tensor, size: int) -> tf.Tensor:
  """The whole (H, W, 6) uint8 pair resized to (size, size), uint8.

  The paper's "adjust the images to 256x256": the aspect ratio is not kept.
  Antialiased bilinear (a triangle filter widened by the scale factor, the
  filter of PIL's `Image.resize(..., BILINEAR)`; within one level of it,
  tested), rounded to 8 bits as a resized copy saved as PNG would be.
  """
  resized = tf.image.resize(
    tf.cast(pair, tf.float32), [size, size], method='bilinear', antialias=True
  )
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _random_start(
  image_size: tf.Tensor, crop: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
  """A crop's first row (or column), uniform over the valid positions."""
  return tf.random.stateless_uniform(
    [],
    seed,
    minval=0,
    maxval=tf.maximum(image_size - crop, 0) + 1,
    dtype=tf.int32,
  )


def _patch(
  pair: tf.Tensor, seeds: tf.Tensor, crop_size: int, patch: str
) -> tf.Tensor:
  """The random crop (reflect-padded where the image is smaller) or the
  resized whole image, of (H, W, 6) uint8 `pair`; `seeds`: rows, columns."""
  if patch == 'resize':
    return resize_pair(pair, crop_size)
  shape = tf.shape(pair)
  crop = tf.constant(crop_size, tf.int32)
  rows = reflect(
    _random_start(shape[0], crop, seeds[0]) + tf.range(crop), shape[0]
  )
  cols = reflect(
    _random_start(shape[1], crop, seeds[1]) + tf.range(crop), shape[1]
  )
  return tf.gather(tf.gather(pair, rows, axis=0), cols, axis=1)


def _jitter_and_symmetry(pair: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
  """The release's saturation jitter, then its symmetry draw, of a uint8
  pair; `seeds`: the factor, whether to apply it, the symmetry."""
  # As the release: with probability 1/3 one factor, uniform in
  # [0.8, 1.2], for both images (pointwise, so crop and jitter commute).
  factor = tf.random.stateless_uniform([], seeds[0], 0.8, 1.2)
  apply = tf.random.stateless_uniform([], seeds[1]) < 1 / 3
  pair = tf.cond(
    apply,
    lambda: tf.concat(
      [saturate(pair[..., :3], factor), saturate(pair[..., 3:], factor)],
      axis=-1,
    ),
    lambda: pair,
  )
  outcome = tf.random.stateless_uniform(
    [], seeds[2], minval=0, maxval=len(SYMMETRIES), dtype=tf.int32
  )
  return apply_symmetry(pair, outcome)


def augment_pair(
  pair: tf.Tensor,
  seed: tf.Tensor,
  crop_size: int,
  augment: bool,
  patch: str = 'crop',
) -> tuple[tf.Tensor, tf.Tensor]:
  """Patch, saturation jitter and symmetry of a (H, W, 6) uint8 pair.

  Args:
    pair: Blur and sharp stacked on the channels.
    seed: Shape [2] int64 stateless seed of this sample.
    crop_size: Side of the square patch.
    augment: Whether to jitter saturation and apply a symmetry (a crop is
      random either way).
    patch: 'crop' (a random crop_size crop, the release) or 'resize' (the
      whole image resized to crop_size x crop_size, the paper's text).

  Returns:
    (blur, sharp) float32 (crop, crop, 3) in [0, 1].
  """
  if patch not in ('crop', 'resize'):
    raise ValueError(f"patch={patch!r}: use 'crop' or 'resize'")
  # One seed each: crop rows, crop columns, factor, apply, symmetry.
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  pair = _patch(pair, seeds[:2], crop_size, patch)
  if augment:
    pair = _jitter_and_symmetry(pair, seeds[2:])
  pair = tf.cast(pair, tf.float32) / 255.0
  pair = tf.ensure_shape(pair, [crop_size, crop_size, 6])
  return pair[..., :3], pair[..., 3:]
