"""tf.data input pipeline: training crops and full-size evaluation batches.

This is the only fcn_jax module that imports TensorFlow, and it hides the GPUs
from TF at import, so that TF never takes accelerator memory.

Datasets are named by specs 'name[/config]:split' ('gopro:train',
'synthetic_blur/mine:test') and read with random access from their ArrayRecord
files through `tfds.data_source`, as raw serialized examples: one Python call
per host batch fetches the bytes of its records (ArrayRecord reads them in
parallel), and everything else (proto parsing, PNG decoding, cropping,
augmentation) runs as TF ops in parallel, deterministic tf.data maps, outside
the GIL. PNG decoding dominates the cost (two 1280x720 PNGs per sample).

Decoded cache (`train_iterator(..., decoded_cache=FOLDER)`). The pairs of the
training split are decoded once into one raw uint8 file in a local folder
(`build_decoded_cache`, on first use; 5.5 MB per 720x1280 pair) that the
pipeline memory-maps: each sample is a view of its (H, W, 6) pair, so no PNG
is decoded while training. The cache holds exactly what PNG decoding gives,
and the sample functions are the same, so both paths yield identical batches.

Training stream. It is stateless and indexed by step, which makes resuming
exact. Global sample j = step * global_batch_size + k (k < global_batch_size)
is example perm_e[j % N] of the N in the split, where e = j // N is its epoch
and perm_e = np.random.default_rng([seed, e]).permutation(N); its crop
position, saturation jitter and symmetry come from stateless TF random ops
seeded with (seed, j). Host p of P yields the k in [p * B / P, (p + 1) * B / P)
of each step. A run restarted at step s builds the stream from
j = s * global_batch_size on and sees exactly the batches of an uninterrupted
run. Augmentation follows the authors' release: a random paired crop
(images smaller than the crop are reflect-padded at the bottom/right; or, with
patch='resize', the whole image resized as in the paper's text), with
probability 1/3 PIL's saturation enhancement (a blend with the luma image, on
uint8, reproduced exactly) by a factor uniform in [0.8, 1.2] applied to both
images, then the release's symmetry draw of 9 outcomes: the identity with
probability 2/9, each other symmetry of the square with 1/9.

Evaluation. Every example exactly once, at its original size (the consumer
pads to a multiple of 8). Examples are grouped by image shape (read once per
process from the PNG headers); each group is padded with masked entries
(index -1, pixels of a real image of the group) to a multiple of the global
batch size, and each global batch is sliced over the hosts, so all hosts yield
the same number of batches with the same shapes in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
import functools
import hashlib
import json
import os
import re
import struct
import tempfile

from etils import epath
from absl import logging
import numpy as np
import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialized its devices; nothing to hide.
  pass

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_datasets as tfds
import tfds_gopro  # noqa: F401  (registers gopro, hide and synthetic_blur)
# pylint: enable=g-import-not-at-top,wrong-import-position

_IMAGE_KEYS = ('blur', 'sharp')
_FEATURES = {k: tf.io.FixedLenFeature([], tf.string) for k in _IMAGE_KEYS}
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


def _build_command(name: str, data_dir: str | None) -> str:
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


def check_dataset(spec: str, data_dir: str | None) -> None:
  """Raises ValueError unless `spec` is prepared in `data_dir`.

  The error is one clear line naming the command that makes the dataset, e.g.
  `tfds build tfds_gopro/gopro --manual_dir=... --data_dir=<data_dir>`.

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
    prepared = False
  if not prepared:
    raise ValueError(
      f'Dataset {name} is not prepared in {where}; make it with: '
      f'{_build_command(name, data_dir)}'
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
      f'{_build_command(name, data_dir)} --file_format=array_record'
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
def _source(spec: str, data_dir: str | None):
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
  """Number of examples in the split of `spec`."""
  return len(_source(spec, data_dir))


def _hosts(
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


def _fetch_fn(source, index_fn=None):
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


def _decode(raw: tf.Tensor) -> tf.Tensor:
  """Serialized example -> (H, W, 6) uint8, blur then sharp channels."""
  parsed = tf.io.parse_single_example(raw, _FEATURES)
  blur = tf.io.decode_png(parsed['blur'], channels=3)
  sharp = tf.io.decode_png(parsed['sharp'], channels=3)
  tf.debugging.assert_equal(
    tf.shape(blur), tf.shape(sharp), message='blur and sharp sizes differ'
  )
  return tf.concat([blur, sharp], axis=-1)


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
  name, split = parse_dataset(spec)
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
  `_decode` gives them), C-ordered, at a page-aligned offset. The data file
  and then its JSON index (offsets, shapes, key) are written under temporary
  names and renamed into place, so a cache is complete or absent; processes
  that build the same cache at once write the same bytes. An existing
  complete cache of the same dataset files is reused.

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
  source = _source(spec, data_dir)
  data_path, index_path, key = _cache_paths(spec, data_dir, cache_dir)
  index = _read_index(index_path, data_path, key)
  if index is not None:
    return data_path, index
  os.makedirs(cache_dir, exist_ok=True)
  logging.info(
    'Decoding the %d pairs of %s into %s', len(source), spec, data_path
  )
  ds = tf.data.Dataset.range(len(source)).batch(16).map(_fetch_fn(source))
  ds = (
    ds.unbatch()
    .map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    .prefetch(4)
  )
  offsets, shapes, temporary = [], [], []
  try:
    fd, tmp_data = tempfile.mkstemp(dir=cache_dir, suffix='.tmp')
    temporary.append(tmp_data)
    os.chmod(tmp_data, 0o644)
    with os.fdopen(fd, 'wb') as f:
      size = 0
      for pair in _options(ds).as_numpy_iterator():
        offset = -(-size // _CACHE_ALIGN) * _CACHE_ALIGN
        f.write(bytes(offset - size))
        f.write(np.ascontiguousarray(pair).data)
        size = offset + pair.nbytes
        offsets.append(offset)
        shapes.append([int(pair.shape[0]), int(pair.shape[1])])
    index = {
      'format': _CACHE_FORMAT,
      'key': key,
      'size': size,
      'offsets': offsets,
      'shapes': shapes,
    }
    fd, tmp_index = tempfile.mkstemp(dir=cache_dir, suffix='.tmp')
    temporary.append(tmp_index)
    os.chmod(tmp_index, 0o644)
    with os.fdopen(fd, 'w') as f:
      json.dump(index, f)
    os.replace(tmp_data, data_path)
    os.replace(tmp_index, index_path)
  finally:
    for path in temporary:
      if os.path.exists(path):
        os.remove(path)
  return data_path, index


def _cached_pairs(spec: str, data_dir: str | None, cache_dir: str):
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


def _reflect(positions: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
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
  Pillow 12.1 in tests/test_input_pipeline.py).

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


def _resize(pair: tf.Tensor, size: int) -> tf.Tensor:
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


def _augment(
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
  s_y, s_x, s_sat, s_apply, s_sym = tf.unstack(
    tf.random.experimental.stateless_split(seed, num=5)
  )
  shape = tf.shape(pair)
  crop = tf.constant(crop_size, tf.int32)

  def start(image_size, s):
    return tf.random.stateless_uniform(
      [],
      s,
      minval=0,
      maxval=tf.maximum(image_size - crop, 0) + 1,
      dtype=tf.int32,
    )

  if patch == 'resize':
    pair = _resize(pair, crop_size)
  else:
    rows = _reflect(start(shape[0], s_y) + tf.range(crop), shape[0])
    cols = _reflect(start(shape[1], s_x) + tf.range(crop), shape[1])
    pair = tf.gather(tf.gather(pair, rows, axis=0), cols, axis=1)
  if augment:
    # As the release: with probability 1/3 one factor, uniform in
    # [0.8, 1.2], for both images (pointwise, so crop and jitter commute).
    factor = tf.random.stateless_uniform([], s_sat, 0.8, 1.2)
    apply = tf.random.stateless_uniform([], s_apply) < 1 / 3
    pair = tf.cond(
      apply,
      lambda: tf.concat(
        [saturate(pair[..., :3], factor), saturate(pair[..., 3:], factor)],
        axis=-1,
      ),
      lambda: pair,
    )
    outcome = tf.random.stateless_uniform(
      [], s_sym, minval=0, maxval=len(SYMMETRIES), dtype=tf.int32
    )
    pair = apply_symmetry(pair, outcome)
  pair = tf.cast(pair, tf.float32) / 255.0
  pair = tf.ensure_shape(pair, [crop_size, crop_size, 6])
  return pair[..., :3], pair[..., 3:]


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


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
      there (built on first use, `build_decoded_cache`) instead of decoding
      two PNGs per sample. The batches are the same.
    dtype: 'float32' (in [0, 1]) or 'uint8' (the augmented crops rounded to
      [0, 255]: 4x fewer bytes to move; convert on the device).

  Yields:
    {'blur': (B/P, crop, crop, 3) of `dtype`, 'sharp': same}. The batch of
    step s depends only on (seed, s).
  """
  if dtype not in ('float32', 'uint8'):
    raise ValueError(f"dtype {dtype!r}: use 'float32' or 'uint8'.")
  host, batch = _hosts(global_batch_size, process_index, process_count)
  source = _source(spec, data_dir)
  n = len(source)
  if n == 0:
    raise ValueError(f'Dataset {spec} is empty.')

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)

  def example_index(j: int) -> int:
    epoch, r = divmod(j, n)
    return int(permutation(epoch)[r])

  if decoded_cache:
    # Example indices; each sample views its decoded pair in the cache.
    indices = np.vectorize(example_index, otypes=[np.int64])

    def fetch(js):
      return tf.ensure_shape(
        tf.numpy_function(indices, [js], tf.int64), js.shape
      )

    load = _cached_pairs(spec, data_dir, decoded_cache)
  else:
    fetch, load = _fetch_fn(source, example_index), _decode
  offsets = tf.range(batch, dtype=tf.int64)

  def fetch_step(t):
    # Host-local step t -> this host's global sample numbers j and records.
    js = (start_step + t) * global_batch_size + host * batch + offsets
    return fetch(js), js

  def sample(record, j):
    blur, sharp = _augment(
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
  return _options(ds).as_numpy_iterator()


def _png_size(png: bytes) -> tuple[int, int]:
  """(height, width) of a PNG from its IHDR chunk."""
  if png[:8] != b'\x89PNG\r\n\x1a\n' or png[12:16] != b'IHDR':
    shape = (
      tf.io.extract_jpeg_shape(png)
      if png[:2] == b'\xff\xd8'
      else (tf.shape(tf.io.decode_image(png)))
    )
    return int(shape[0]), int(shape[1])
  width, height = struct.unpack('>II', png[16:24])
  return height, width


@functools.lru_cache(maxsize=None)
def _scan(spec: str, data_dir: str | None) -> tuple[list, list[str]]:
  """[(height, width)] and ids of all examples, read once per process."""
  check_dataset(spec, data_dir)
  name, split = parse_dataset(spec)
  skip = tfds.decode.SkipDecoding()
  source = tfds.data_source(
    name,
    split=split,
    data_dir=data_dir,
    download=False,
    decoders={'blur': skip, 'sharp': skip},
  )
  shapes, ids = [], []
  for start in range(0, len(source), 64):
    for ex in source.__getitems__(range(start, min(start + 64, len(source)))):
      shape = _png_size(ex['blur'])
      if _png_size(ex['sharp']) != shape:
        raise ValueError(f"{spec}: blur and sharp sizes differ for {ex['id']}")
      shapes.append(shape)
      example_id = ex['id']
      ids.append(
        example_id.decode()
        if isinstance(example_id, bytes)
        else str(example_id)
      )
  return shapes, ids


def eval_ids(spec: str, data_dir: str | None) -> list[str]:
  """The `id` of example i, for per-image CSVs."""
  return list(_scan(spec, data_dir)[1])


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
  shapes, _ = _scan(spec, data_dir)
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
  host, batch = _hosts(global_batch_size, process_index, process_count)
  plan = _eval_plan(spec, data_dir, global_batch_size=global_batch_size)
  if not plan:
    return iter(())
  index = np.concatenate([b[host * batch : (host + 1) * batch] for b in plan])
  # Padding repeats the first example of its batch's shape group.
  fill = np.concatenate(
    [
      np.where(
        b[host * batch : (host + 1) * batch] < 0,
        b[0],
        b[host * batch : (host + 1) * batch],
      )
      for b in plan
    ]
  )
  fetch = _fetch_fn(_source(spec, data_dir))

  def load(i, raw):
    pair = tf.cast(_decode(raw), tf.float32) / 255.0
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
  return _options(ds).as_numpy_iterator()
