"""The evaluation stream: every example exactly once, at its original size.

The consumer pads to a multiple of 8. Examples are grouped by image shape,
read once per process from the `height` and `width` features the builders
store; each group is padded with masked entries (index -1, pixels of a real
image of the group) to a multiple of the global batch size, and each global
batch is sliced over the hosts, so all hosts yield the same number of batches
with the same shapes in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
import functools

import numpy as np
import tensorflow as tf

from fcn_jax.data import datasets

_SIZE_FEATURES = ('height', 'width')
_PLAN_FEATURES = {
  'height': tf.io.FixedLenFeature([], tf.int64),
  'width': tf.io.FixedLenFeature([], tf.int64),
  'id': tf.io.FixedLenFeature([], tf.string),
}
_READ_AT_ONCE = 64  # Records per read of the shapes and ids.


@functools.lru_cache(maxsize=None)
def _shapes_and_ids(
  spec: str, data_dir: str | None
) -> tuple[list[tuple[int, int]], list[str]]:
  """[(height, width)] and ids of all examples, read once per process."""
  builder = datasets.prepared_builder(spec, data_dir)
  if not set(_SIZE_FEATURES) <= set(builder.info.features):
    name, _ = datasets.parse_dataset(spec)
    raise ValueError(
      f'Dataset {name} in {data_dir or "the default TFDS data_dir"} (version'
      f' {builder.info.version}) stores no image sizes (height, width);'
      f' rebuild it with: {datasets.build_command(name, data_dir)}'
    )
  source = datasets.record_source(spec, data_dir)
  shapes, ids = [], []
  for start in range(0, len(source), _READ_AT_ONCE):
    keys = range(start, min(start + _READ_AT_ONCE, len(source)))
    parsed = tf.io.parse_example(source.__getitems__(keys), _PLAN_FEATURES)
    shapes.extend(
      zip(parsed['height'].numpy().tolist(), parsed['width'].numpy().tolist())
    )
    ids.extend(example_id.decode() for example_id in parsed['id'].numpy())
  return shapes, ids


def eval_ids(spec: str, data_dir: str | None) -> list[str]:
  """The `id` of example i, for per-image CSVs."""
  return list(_shapes_and_ids(spec, data_dir)[1])


def _eval_plan(
  spec: str,
  data_dir: str | None,
  *,
  global_batch_size: int,
) -> list[np.ndarray]:
  """The global batches of evaluation: int64 arrays of example indices.

  Entries are -1 for padding. Batches of a shape group are consecutive; the
  groups come in the order of their first example.

  Args:
    spec: Dataset spec.
    data_dir: TFDS data_dir.
    global_batch_size: Entries per batch.
  """
  shapes, _ = _shapes_and_ids(spec, data_dir)
  groups: dict[tuple[int, int], list[int]] = {}
  for i, shape in enumerate(shapes):
    groups.setdefault(shape, []).append(i)
  batches = []
  for members in groups.values():
    padded = -np.ones(
      -(-len(members) // global_batch_size) * global_batch_size, np.int64
    )
    padded[: len(members)] = members
    batches.extend(padded.reshape(-1, global_batch_size))
  return batches


def eval_iterator(
  spec: str,
  data_dir: str | None,
  *,
  global_batch_size: int,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Full-resolution evaluation batches: every example exactly once.

  All images of one batch share one shape; every host yields the same number
  of batches with the same shapes, in the same order. Padding entries (mask
  False, index -1) fill the last batch of each shape group.

  Args:
    spec: Dataset spec, e.g. 'gopro:test'.
    data_dir: TFDS data_dir (None: TFDS's default).
    global_batch_size: B, entries per batch over all hosts.
    process_index: This host p (default: `jax.process_index()`).
    process_count: Number of hosts P (default: `jax.process_count()`).

  Returns:
    An iterator of {'blur', 'sharp': float32 (B/P, H, W, 3) in [0, 1] at the
    images' original size (the consumer pads to a multiple of 8), 'mask': bool
    (B/P,), 'index': int32 (B/P,) example index (-1 for padding)}.
  """
  host, batch = datasets.host_batch(
    global_batch_size, process_index, process_count
  )
  plan = _eval_plan(spec, data_dir, global_batch_size=global_batch_size)
  if not plan:
    return iter(())
  mine = [b[host * batch : (host + 1) * batch] for b in plan]
  index = np.concatenate(mine)
  # Padding repeats the first example of its batch's shape group.
  fill = np.concatenate([np.where(m < 0, b[0], m) for m, b in zip(mine, plan)])
  fetch = datasets.fetch_records(datasets.record_source(spec, data_dir))

  def load(i, raw):
    pair = tf.cast(datasets.decode_pair(raw), tf.float32) / 255.0
    return {
      'blur': pair[..., :3],
      'sharp': pair[..., 3:],
      'mask': i >= 0,
      'index': tf.cast(i, tf.int32),
    }

  ds = tf.data.Dataset.from_tensor_slices((index, fill)).batch(batch)
  ds = ds.map(lambda i, f: (i, fetch(f))).unbatch()
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch).prefetch(1)
  return datasets.deterministic(ds).as_numpy_iterator()
