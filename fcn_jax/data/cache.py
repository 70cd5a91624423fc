"""The decoded cache: the pairs of a training split decoded once.

The pairs are decoded into one raw uint8 file in a local folder (on first
use; 5.5 MB per 720x1280 pair) that the training stream memory-maps: each
sample is a view of its (H, W, 6) pair, so no PNG is decoded while training.
The cache holds exactly what PNG decoding gives, and the sample functions are
the same, so both paths yield identical batches.
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import json
import os
import re
import tempfile

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fcn_jax.data import datasets

_CACHE_FORMAT = 1
_CACHE_ALIGN = 4096  # Each pair starts on a page of the memory-mapped file.


def _cache_paths(
  spec: str, data_dir: str | None, cache_dir: str
) -> tuple[str, str, dict]:
  """(data file, index file, key) of the decoded cache of `spec`.

  The key names what the cache is made from (spec, data_dir, dataset version,
  the split's files with their sizes and modification times), so a rebuilt
  or different dataset gets a cache of its own.

  Args:
    spec: Dataset spec.
    data_dir: TFDS data_dir.
    cache_dir: Local folder of decoded caches.
  """
  name, split = datasets.parse_dataset(spec)
  builder = tfds.builder(name, data_dir=data_dir)
  files = []
  for instruction in builder.info.splits[split].file_instructions:
    stat = tf.io.gfile.stat(instruction.filename)
    files.append(
      [
        instruction.filename,
        instruction.skip,
        instruction.take,
        stat.length,
        stat.mtime_nsec,
      ]
    )
  key = {
    'spec': spec,
    'data_dir': str(builder.data_dir),
    'version': str(builder.info.version),
    'files': files,
  }
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[
    :16
  ]
  stem = os.path.join(cache_dir, re.sub(r'[^\w.-]+', '_', spec) + '-' + digest)
  return stem + '.u8', stem + '.json', key


def _read_index(index_path: str, data_path: str, key: dict) -> dict | None:
  """The index of a complete cache made from `key`, else None."""
  try:
    with open(index_path) as f:
      index = json.load(f)
    complete = (
      index.get('format') == _CACHE_FORMAT
      and index['key'] == key
      and os.path.getsize(data_path) == index['size']
    )
  except (OSError, ValueError, KeyError):
    return None
  return index if complete else None


def build_decoded_cache(
  spec: str, data_dir: str | None, cache_dir: str
) -> tuple[str, dict]:
  """Decodes every pair of `spec` once into a raw uint8 file in `cache_dir`.

  Pair i is stored as its (H, W, 6) uint8 array (blur then sharp channels, as
  `datasets.decode_pair` gives them), C-ordered, at a page-aligned offset. The
  data file and then its JSON index (offsets, shapes, key) are written under
  temporary names and renamed into place, so a cache is complete or absent;
  processes that build the same cache at once write the same bytes. An
  existing complete cache of the same dataset files is reused.

  Args:
    spec: Dataset spec, e.g. 'gopro/blur:train'.
    data_dir: TFDS data_dir (None: TFDS's default; may be remote).
    cache_dir: A local folder (the data file is memory-mapped).

  Returns:
    (data file path, index).
  """
  cache_dir = os.path.expanduser(cache_dir)
  if '://' in cache_dir:
    raise ValueError(
      f'decoded_cache {cache_dir!r}: use a local folder (the'
      ' cache is memory-mapped).'
    )
  source = datasets.record_source(spec, data_dir)
  data_path, index_path, key = _cache_paths(spec, data_dir, cache_dir)
  index = _read_index(index_path, data_path, key)
  if index is not None:
    return data_path, index
  os.makedirs(cache_dir, exist_ok=True)
  logging.info(
    'Decoding the %d pairs of %s into %s', len(source), spec, data_path
  )
  ds = tf.data.Dataset.range(len(source)).batch(16)
  ds = ds.map(datasets.fetch_records(source)).unbatch()
  ds = ds.map(
    datasets.decode_pair,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  ).prefetch(4)
  temporary = []
  try:
    tmp_data = _temporary_file(cache_dir, temporary)
    with open(tmp_data, 'wb') as f:
      size, offsets, shapes = _write_pairs(
        f, datasets.deterministic(ds).as_numpy_iterator()
      )
    index = {
      'format': _CACHE_FORMAT,
      'key': key,
      'size': size,
      'offsets': offsets,
      'shapes': shapes,
    }
    tmp_index = _temporary_file(cache_dir, temporary)
    with open(tmp_index, 'w') as f:
      json.dump(index, f)
    os.replace(tmp_data, data_path)
    os.replace(tmp_index, index_path)
  finally:
    for path in temporary:
      if os.path.exists(path):
        os.remove(path)
  return data_path, index


def _temporary_file(folder: str, made: list[str]) -> str:
  """A new empty file in `folder`, readable by all, appended to `made`."""
  fd, path = tempfile.mkstemp(dir=folder, suffix='.tmp')
  os.close(fd)
  made.append(path)
  os.chmod(path, 0o644)
  return path


def _write_pairs(f, pairs) -> tuple[int, list[int], list[list[int]]]:
  """Writes each pair at the next page-aligned offset of `f`.

  Returns:
    (size of the file, the pairs' offsets, their [height, width]).
  """
  size, offsets, shapes = 0, [], []
  for pair in pairs:
    offset = -(-size // _CACHE_ALIGN) * _CACHE_ALIGN
    f.write(bytes(offset - size))
    f.write(np.ascontiguousarray(pair).data)
    size = offset + pair.nbytes
    offsets.append(offset)
    shapes.append([int(pair.shape[0]), int(pair.shape[1])])
  return size, offsets, shapes


def cached_pair_fn(
  spec: str, data_dir: str | None, cache_dir: str
) -> Callable[[tf.Tensor], tf.Tensor]:
  """tf function: example index -> its (H, W, 6) uint8 pair, from the cache."""
  data_path, index = build_decoded_cache(spec, data_dir, cache_dir)
  data = np.memmap(data_path, np.uint8, 'r')
  offsets, shapes = index['offsets'], index['shapes']

  def view(i):
    (h, w), offset = shapes[i], offsets[i]
    return data[offset : offset + h * w * 6].reshape(h, w, 6)

  def pair_tf(i):
    pair = tf.numpy_function(view, [i], tf.uint8, stateful=False)
    pair.set_shape([None, None, 6])
    return pair

  return pair_tf
