"""Throughput of the training input pipeline (images/s) on this machine.

Builds (once) a `synthetic_blur` dataset of full-size 720x1280 pairs from
procedural photos in --data_dir (default: a temporary folder) and its decoded
cache in --cache_dir, then times `fcn_jax.data.train_iterator` at
steady state in one run on both paths: decoding two PNGs per sample (float32
batches, and uint8 as the trainer asks) and reading the decoded cache (uint8),
with the speed-up of the cache. It also times the stages alone (record fetch,
PNG decoding, cache view, crop + augmentation) on one thread.

  python bench/input_pipeline.py --batch_size=16 --crop=256 --seconds=30
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from fcn_jax import data
from fcn_jax.data import augment as augment_lib
from fcn_jax.data import cache
from fcn_jax.data import datasets
from tfds_gopro.synthetic_blur import camera_shake
from tfds_gopro.synthetic_blur import synthetic_blur_dataset_builder as sb

CONFIG = 'bench720'


def build(data_dir: str, photos: int, crops_per_photo: int) -> None:
  """Makes synthetic_blur/bench720 (720x1280 pairs) in data_dir if missing."""
  if os.path.isdir(os.path.join(data_dir, 'synthetic_blur', CONFIG)) and (
    tfds.builder(f'synthetic_blur/{CONFIG}', data_dir=data_dir).is_prepared()
  ):
    return
  with tempfile.TemporaryDirectory() as folder:
    for i in range(photos):
      photo = camera_shake.procedural_photo(np.random.default_rng(i), 760, 1320)
      Image.fromarray(photo).save(os.path.join(folder, f'photo{i}.png'))
    config = sb.SyntheticBlurConfig(
      name=CONFIG,
      source_dir=folder,
      crop_height=720,
      crop_width=1280,
      crops_per_photo=crops_per_photo,
      max_side=0,
      test_fraction=0.1,
    )
    start = time.perf_counter()
    sb.Builder(data_dir=data_dir, config=config).download_and_prepare()
    print(
      f'built synthetic_blur/{CONFIG} in {time.perf_counter() - start:.0f} s'
    )


def stage_times(
  spec: str, data_dir: str, crop: int, cache_dir: str | None = None, n: int = 20
) -> None:
  """Per-image time of each stage, on one thread (eager TF ops)."""
  source = datasets.record_source(spec, data_dir)
  raws = [source[i % len(source)] for i in range(n)]
  start = time.perf_counter()
  for i in range(n):
    source[i % len(source)]
  fetch = (time.perf_counter() - start) / n
  decode = tf.function(datasets.decode_pair)
  augment = tf.function(
    lambda pair, seed: augment_lib.augment_pair(pair, seed, crop, True)
  )
  pairs = [decode(tf.constant(r)) for r in raws[:2]]
  start = time.perf_counter()
  for r in raws:
    pairs.append(decode(tf.constant(r)))
  dec = (time.perf_counter() - start) / n
  augment(pairs[0], tf.constant([0, 0], tf.int64))
  start = time.perf_counter()
  for i, pair in enumerate(pairs[2:]):
    augment(pair, tf.constant([0, i], tf.int64))
  aug = (time.perf_counter() - start) / n
  mb = np.mean([len(r) for r in raws]) / 2**20
  print(
    f'one thread, per pair ({mb:.1f} MiB record): fetch {fetch * 1e3:.1f}'
    f' ms, parse + 2 PNG decodes {dec * 1e3:.1f} ms, crop + augment'
    f' {aug * 1e3:.1f} ms  (~{1 / (fetch + dec + aug):.0f} pairs/s/core)'
  )
  if cache_dir:
    # pylint: disable-next=protected-access
    view = tf.function(cache.cached_pair_fn(spec, data_dir, cache_dir))
    view(tf.constant(0, tf.int64))
    start = time.perf_counter()
    for i in range(n):
      view(tf.constant(i % len(source), tf.int64))
    cached = (time.perf_counter() - start) / n
    print(
      'one thread, per pair from the decoded cache: view'
      f' {cached * 1e3:.1f} ms, crop + augment {aug * 1e3:.1f} ms'
      f'  (~{1 / (cached + aug):.0f} pairs/s/core)'
    )


def throughput(
  name: str, batches, batch_size: int, warmup: int, seconds: float
) -> float:
  """Images/s of `batches` at steady state; prints one line."""
  for _ in range(warmup):
    next(batches)
  count, start, cpu = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(batches)
    count += 1
  elapsed = time.perf_counter() - start
  cpu = time.process_time() - cpu  # All threads of this process.
  images = count * batch_size
  print(
    f'{name}: {images / elapsed:.1f} images/s ({elapsed / count * 1e3:.0f}'
    f' ms per batch of {batch_size}, {count} batches in {elapsed:.1f} s);'
    f' {cpu / elapsed:.2f} cores busy, {images / cpu:.1f} images per'
    f' CPU-second; load average {os.getloadavg()[0]:.1f}'
  )
  return images / elapsed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--data_dir',
    default=None,
    help='TFDS data_dir (default: a temporary folder).',
  )
  parser.add_argument(
    '--dataset',
    default=None,
    help=f'Spec to read (default: synthetic_blur/{CONFIG}'
    ':train, built if missing).',
  )
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--crop', type=int, default=256)
  parser.add_argument('--seconds', type=float, default=20.0)
  parser.add_argument(
    '--warmup', type=int, default=5, help='Batches before timing.'
  )
  parser.add_argument(
    '--cache_dir',
    default=None,
    help='Folder of the decoded cache (default: a temporary folder).',
  )
  parser.add_argument('--photos', type=int, default=8)
  parser.add_argument('--crops_per_photo', type=int, default=4)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    cache_dir = args.cache_dir or os.path.join(tmp, 'decoded')
    spec = args.dataset or f'synthetic_blur/{CONFIG}:train'
    if args.dataset is None:
      build(data_dir, args.photos, args.crops_per_photo)
    print(
      f'{spec}: {data.num_examples(spec, data_dir)} examples; batch'
      f' {args.batch_size}, crop {args.crop}; {os.cpu_count()} CPUs'
    )
    start = time.perf_counter()
    data_path, index = data.build_decoded_cache(spec, data_dir, cache_dir)
    pairs = len(index['shapes'])
    print(
      f'decoded cache: {index["size"] / 2**20:.0f} MiB for {pairs} pairs'
      f' ({index["size"] / pairs / 2**20:.2f} MiB per pair) in {data_path};'
      f' ready in {time.perf_counter() - start:.1f} s'
    )
    stage_times(spec, data_dir, args.crop, cache_dir)
    common = dict(
      global_batch_size=args.batch_size,
      crop_size=args.crop,
      seed=0,
      process_index=0,
      process_count=1,
    )
    rates = {}
    for name, kwargs in (
      ('png float32', {}),
      ('png uint8', dict(dtype='uint8')),
      ('cache uint8', dict(dtype='uint8', decoded_cache=cache_dir)),
    ):
      rates[name] = throughput(
        f'train_iterator, {name}',
        data.train_iterator(spec, data_dir, **common, **kwargs),
        args.batch_size,
        args.warmup,
        args.seconds,
      )
    print(
      f'decoded cache vs PNG decoding: {rates["cache uint8"]:.1f} /'
      f' {rates["png uint8"]:.1f} = x'
      f'{rates["cache uint8"] / rates["png uint8"]:.1f} (uint8 batches);'
      f' x{rates["cache uint8"] / rates["png float32"]:.1f} vs the float32'
      ' PNG pipeline'
    )


if __name__ == '__main__':
  main()
