"""The training stream: stateless and indexed by step, so resuming is exact.

Global sample j = step * global_batch_size + k (k < global_batch_size) is
example perm_e[j % N] of the N in the split, where e = j // N is its epoch and
perm_e = np.random.default_rng([seed, e]).permutation(N); its crop position,
saturation jitter and symmetry come from stateless TF random ops seeded with
(seed, j) (`augment.augment_pair`). Host p of P yields the k in
[p * B / P, (p + 1) * B / P) of each step. A run restarted at step s builds the
stream from j = s * global_batch_size on and sees exactly the batches of an
uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import functools

import numpy as np
import tensorflow as tf

from fcn_jax.data import augment as augment_lib
from fcn_jax.data import cache
from fcn_jax.data import datasets


def _example_index_fn(seed: int, n: int) -> Callable[[int], int]:
  """Global sample number j -> the index of its example, epoch by epoch."""

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)

  def example_index(j: int) -> int:
    epoch, r = divmod(j, n)
    return int(permutation(epoch)[r])

  return example_index


def _reader(
  spec: str, data_dir: str | None, seed: int, decoded_cache: str | None
) -> tuple[Callable, Callable]:
  """(fetch, load): sample numbers [n] -> records [n]; record -> its pair.

  A record is a serialized example (decoded by `load`), or with a decoded
  cache the example's index (viewed in the cache by `load`).
  """
  source = datasets.record_source(spec, data_dir)
  if not len(source):
    raise ValueError(f'Dataset {spec} is empty.')
  example_index = _example_index_fn(seed, len(source))
  if not decoded_cache:
    return datasets.fetch_records(source, example_index), datasets.decode_pair
  indices = np.vectorize(example_index, otypes=[np.int64])

  def fetch(js):
    return tf.ensure_shape(tf.numpy_function(indices, [js], tf.int64), js.shape)

  return fetch, cache.cached_pair_fn(spec, data_dir, decoded_cache)


def train_iterator(
  spec: str,
  data_dir: str | None,
  *,
  global_batch_size: int,
  crop_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
  augment: bool = True,
  patch: str = 'crop',
  decoded_cache: str | None = None,
  dtype: str = 'float32',
) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's part of each global training batch, forever.

  Args:
    spec: Dataset spec, e.g. 'gopro:train'.
    data_dir: TFDS data_dir (None: TFDS's default).
    global_batch_size: B, examples per step over all hosts.
    crop_size: Side of the square crops.
    seed: Seed of the example order and of the augmentation.
    start_step: First step to yield (to resume a run).
    process_index: This host p (default: `jax.process_index()`).
    process_count: Number of hosts P (default: `jax.process_count()`).
    augment: Whether to apply saturation jitter and symmetries (the crop is
      random either way).
    patch: 'crop' (random crop_size crops, the release) or 'resize' (whole
      images resized to crop_size x crop_size, the paper's section 4.2).
    decoded_cache: A local folder: read the pairs from their decoded cache
      there (built on first use, `cache.build_decoded_cache`) instead of
      decoding two PNGs per sample. The batches are the same.
    dtype: 'float32' (in [0, 1]) or 'uint8' (the augmented crops rounded to
      [0, 255]: 4x fewer bytes to move; convert on the device).

  Yields:
    {'blur': (B/P, crop, crop, 3) of `dtype`, 'sharp': same}. The batch of
    step s depends only on (seed, s).
  """
  if dtype not in ('float32', 'uint8'):
    raise ValueError(f"dtype {dtype!r}: use 'float32' or 'uint8'.")
  host, batch = datasets.host_batch(
    global_batch_size, process_index, process_count
  )
  fetch, load = _reader(spec, data_dir, seed, decoded_cache)
  offsets = tf.range(batch, dtype=tf.int64)

  def fetch_step(t):
    # Host-local step t -> this host's global sample numbers j and records.
    js = (start_step + t) * global_batch_size + host * batch + offsets
    return fetch(js), js

  def sample(record, j):
    blur, sharp = augment_lib.augment_pair(
      load(record), tf.stack([seed, j]), crop_size, augment, patch
    )
    if dtype == 'uint8':
      blur, sharp = (
        tf.cast(tf.round(x * 255.0), tf.uint8) for x in (blur, sharp)
      )
    return {'blur': blur, 'sharp': sharp}

  ds = tf.data.Dataset.counter(dtype=tf.int64)
  ds = ds.map(fetch_step, num_parallel_calls=2, deterministic=True).unbatch()
  ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch, drop_remainder=True).prefetch(2)
  return datasets.deterministic(ds).as_numpy_iterator()
