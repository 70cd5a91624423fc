"""Dataset names, checks and builds; split sizes; random-access sources.

A dataset is named by a spec 'name[/config][:version]:split'. `check_dataset`
says in one line what is missing and which command makes it;
`prepare_synthetic` builds the synthetic datasets that need no download.
Split sizes are TFDS's (`builder.info.splits`). Records are read with random
access, as raw serialized examples, by `record_source` and `fetch_records`.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import tempfile

from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_gopro  # noqa: F401  (registers gopro, hide and synthetic_blur)

IMAGE_KEYS = ('blur', 'sharp')
_IMAGE_FEATURES = {k: tf.io.FixedLenFeature([], tf.string) for k in IMAGE_KEYS}
_RANDOM_ACCESS = ('array_record', 'parquet')
_PREPARED_MARKERS = ('features.json', 'dataset_info.json')  # TFDS's


def parse_dataset(spec: str) -> tuple[str, str]:
  """Splits a spec into (name, split).

  'gopro/blur:train' -> ('gopro/blur', 'train'); 'hide:test' -> ('hide',
  'test'); 'gopro:train[:10%]' -> ('gopro', 'train[:10%]'). Pure Python.

  Args:
    spec: 'name[/config][:version]:split'.

  Returns:
    (name, split).
  """
  # The last ':' outside brackets: splits may be slices ('train[:10%]').
  depth, cut = 0, -1
  for i, char in enumerate(spec):
    depth += {'[': 1, ']': -1}.get(char, 0)
    if char == ':' and depth == 0:
      cut = i
  name, split = spec[: max(cut, 0)], spec[cut + 1 :]
  if cut < 0 or not name or not split:
    raise ValueError(
      f"Dataset {spec!r} is not of the form 'name[/config]:split', e.g."
      " 'gopro:train'."
    )
  return name, split


def build_command(name: str, data_dir: str | None) -> str:
  """The shell command that prepares dataset `name` in `data_dir`."""
  dataset, _, config = name.split(':')[0].partition('/')
  command = f'tfds build tfds_gopro/{dataset}'
  if dataset == 'synthetic_blur' and config and config != 'skimage':
    command += (
      f' --config=\'{{"name": "{config}", "source_dir": "<photo folder>"}}\''
    )
  elif config:
    command += f' --config={config}'
  if dataset != 'synthetic_blur':
    command += f' --manual_dir=<folder with the {dataset} download>'
  if data_dir:
    command += f' --data_dir={data_dir}'
  return command


def _versions_on_disk(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The versions of `builder`'s dataset (and config) prepared in its data_dir."""
  folder = epath.Path(builder.data_path).parent
  try:
    return sorted(
      p.name for p in folder.iterdir() if (p / 'dataset_info.json').exists()
    )
  except OSError:  # No folder (also FileNotFoundError, NotADirectoryError).
    return []


def check_dataset(spec: str, data_dir: str | None) -> None:
  """Raises ValueError unless `spec` is prepared in `data_dir`.

  The error is one clear line naming the command that makes the dataset, e.g.
  `tfds build tfds_gopro/gopro --manual_dir=... --data_dir=<data_dir>`; a
  dataset prepared only at an older version of its builder is named with its
  version and the command that rebuilds it.

  Args:
    spec: Dataset spec, e.g. 'gopro:train'.
    data_dir: TFDS data_dir (None: TFDS's default).
  """
  name, split = parse_dataset(spec)
  where = data_dir or 'the default TFDS data_dir'
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except (tfds.core.DatasetNotFoundError, ValueError):
    # Unknown dataset or config, and nothing on disk to read it from.
    builder, prepared = None, False
  if not prepared:
    older = _versions_on_disk(builder) if builder is not None else []
    if older:
      version = str(builder.version)
      notes = builder.release_notes.get(version, '')
      raise ValueError(
        f'Dataset {name} in {where} is prepared at version'
        f' {", ".join(older)}, not {version} ({notes.rstrip(".")}); rebuild'
        f' it with: {build_command(name, data_dir)}'
      )
    raise ValueError(
      f'Dataset {name} is not prepared in {where}; make it with: '
      f'{build_command(name, data_dir)}'
    )
  try:
    builder.info.splits[split]
  except (KeyError, ValueError):
    raise ValueError(
      f'Dataset {name} in {where} has no split {split!r}; it has'
      f' {sorted(builder.info.splits)}.'
    ) from None
  formats = {f.value for f in builder.info.available_file_formats()}
  if not formats & set(_RANDOM_ACCESS):
    raise ValueError(
      f'Dataset {name} in {where} is stored as {sorted(formats)}, without'
      ' random access; rebuild it as ArrayRecord with: '
      f'{build_command(name, data_dir)} --file_format=array_record'
      ' --overwrite'
    )


def prepare_synthetic(spec: str, data_dir: str | None) -> None:
  """Builds a missing `synthetic_blur` dataset of a config defined in code.

  The default config (`skimage`) needs no download, so a run can make it on
  the fly (about 20 s on 2 CPU cores). Datasets of other names, configs made
  from JSON (whose photo folder only their build command knows) and prepared
  datasets are left alone: `check_dataset` reports what is missing. Call it
  from one process per data_dir.

  Args:
    spec: Dataset spec, e.g. 'synthetic_blur:train'.
    data_dir: TFDS data_dir (None: TFDS's default).
  """
  name, _ = parse_dataset(spec)
  if name.split(':')[0].split('/')[0] != 'synthetic_blur':
    return
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.DatasetNotFoundError, ValueError):
    return  # A config that is not in code and not on disk.
  if not builder.is_prepared():
    if '://' in (data_dir or ''):
      _prepare_through_local_folder(name, data_dir)
    else:
      builder.download_and_prepare()


def _prepare_through_local_folder(name: str, data_dir: str) -> None:
  """Builds dataset `name` in a local temporary folder, then copies it to
  `data_dir` (gs://...): the array_record wheel's writer opens only local
  files (its reader reads gs:// too). The two JSON files that make TFDS see a
  prepared dataset are copied last."""
  with tempfile.TemporaryDirectory(prefix='fcn_jax_tfds_') as tmp:
    builder = tfds.builder(name, data_dir=tmp)
    builder.download_and_prepare()
    local = epath.Path(tmp) / builder.name
    files = sorted(
      (root / f for root, _, names in local.walk() for f in names),
      key=lambda p: (p.name in _PREPARED_MARKERS, str(p)),
    )
    for src in files:
      dst = epath.Path(data_dir) / builder.name / src.relative_to(local)
      dst.parent.mkdir(parents=True, exist_ok=True)
      src.copy(dst, overwrite=True)


@functools.lru_cache(maxsize=None)
def prepared_builder(spec: str, data_dir: str | None):
  """The TFDS builder of `spec`, checked by `check_dataset` (once a process)."""
  check_dataset(spec, data_dir)
  return tfds.builder(parse_dataset(spec)[0], data_dir=data_dir)


@functools.lru_cache(maxsize=None)
def record_source(spec: str, data_dir: str | None):
  """Random-access source of the raw serialized examples of `spec`."""
  check_dataset(spec, data_dir)
  name, split = parse_dataset(spec)
  return tfds.data_source(
    name,
    split=split,
    data_dir=data_dir,
    download=False,
    deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
  )


def num_examples(spec: str, data_dir: str | None) -> int:
  """Number of examples in the split of `spec`, from the dataset's info."""
  _, split = parse_dataset(spec)
  return prepared_builder(spec, data_dir).info.splits[split].num_examples


def host_batch(
  global_batch_size: int,
  process_index: int | None,
  process_count: int | None,
) -> tuple[int, int]:
  """Returns (this host's index, per-host batch size)."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = (
      jax.process_index() if process_index is None else (process_index)
    )
    process_count = (
      jax.process_count() if process_count is None else (process_count)
    )
  if not 0 <= process_index < process_count:
    raise ValueError(
      f'process_index {process_index} not in [0, {process_count}).'
    )
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
      f'Global batch size {global_batch_size} is not a positive multiple of'
      f' the process count {process_count}.'
    )
  return process_index, global_batch_size // process_count


def fetch_records(
  source, index_fn: Callable[[int], int] | None = None
) -> Callable[[tf.Tensor], tf.Tensor]:
  """tf function: int64 [n] -> [n] serialized examples, in one Python call.

  ArrayRecord reads the n records in parallel (C++ threads), so a call per
  batch rather than per example keeps the GIL out of the way.

  Args:
    source: Random-access source of serialized examples.
    index_fn: Maps an int to the example index to read (default: identity).
  """

  def fetch(keys):
    keys = [int(k) for k in keys.numpy()]
    if index_fn is not None:
      keys = [index_fn(k) for k in keys]
    return np.array(source.__getitems__(keys), dtype=object)

  def fetch_tf(keys):
    raw = tf.py_function(fetch, [keys], tf.string)
    raw.set_shape(keys.shape)
    return raw

  return fetch_tf


def decode_pair(raw: tf.Tensor) -> tf.Tensor:
  """Serialized example -> (H, W, 6) uint8, blur then sharp channels."""
  parsed = tf.io.parse_single_example(raw, _IMAGE_FEATURES)
  blur = tf.io.decode_png(parsed['blur'], channels=3)
  sharp = tf.io.decode_png(parsed['sharp'], channels=3)
  tf.debugging.assert_equal(
    tf.shape(blur), tf.shape(sharp), message='blur and sharp sizes differ'
  )
  return tf.concat([blur, sharp], axis=-1)


def deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` with the options of every stream here: deterministic order, one
  thread per op (the parallelism is across the maps' elements)."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)
