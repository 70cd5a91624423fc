r"""Benchmark: does padding to size buckets change the restored images?

Takes the first --images test pairs of a TFDS dataset, crops each pair to a
random height and width between half and all of its own (seeded), deblurs the
blurry crops with the checkpoint of --workdir once per --buckets value
(`fcn_jax.load(..., bucket=B)`) and prints, per bucket: mean PSNR against the
sharp crops, the per-image PSNR change against the first bucket (min, mean,
max), the largest difference of any 8-bit output level, and the number of
distinct padded sizes (each compiles once).

  python bench/bucket_quality.py --workdir=runs/demo --data_dir=runs/data \
      --dataset=synthetic_blur/mild:test --images=16 --buckets=8,64,128
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow_datasets as tfds

import fcn_jax
from fcn_jax import metrics
import tfds_gopro  # pylint: disable=unused-import  (registers the datasets)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--dataset', default='synthetic_blur/mild:test')
  parser.add_argument('--images', type=int, default=16)
  parser.add_argument('--buckets', default='8,64,128')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  name, split = args.dataset.rsplit(':', 1)
  source = tfds.data_source(name, split=split, data_dir=args.data_dir)
  buckets = [int(b) for b in args.buckets.split(',')]
  deblur = {b: fcn_jax.load(args.workdir, bucket=b) for b in buckets}
  rng = np.random.default_rng(args.seed)
  psnr = {b: [] for b in buckets}
  levels = {b: 0 for b in buckets}
  sizes = {b: set() for b in buckets}
  for i in range(min(args.images, len(source))):
    pair = source[i]
    big_h, big_w = pair['blur'].shape[:2]
    h = int(rng.integers(big_h // 2, big_h + 1))
    w = int(rng.integers(big_w // 2, big_w + 1))
    blur, sharp = pair['blur'][:h, :w], pair['sharp'][:h, :w]
    outs = {b: deblur[b](blur) for b in buckets}
    for b in buckets:
      sizes[b].add((-h % b + h, -w % b + w))
      psnr[b].append(float(metrics.psnr(outs[b], sharp, max_value=255)))
      levels[b] = max(
        levels[b],
        int(np.abs(outs[b].astype(int) - outs[buckets[0]].astype(int)).max()),
      )
  base = np.array(psnr[buckets[0]])
  print(f'{len(base)} crops of {args.dataset}, {args.workdir}')
  print(
    f'\n| bucket | PSNR dB | change vs {buckets[0]}: min / mean / max dB '
    '| largest level difference | padded sizes |'
  )
  print('| --- | --- | --- | --- | --- |')
  for b in buckets:
    d = np.array(psnr[b]) - base
    print(
      f'| {b} | {np.mean(psnr[b]):.4f} | {d.min():+.4f} / '
      f'{d.mean():+.4f} / {d.max():+.4f} | {levels[b]} | {len(sizes[b])} |'
    )


if __name__ == '__main__':
  main()
