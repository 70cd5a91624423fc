r"""Benchmark: compilations and wall time of predict on a folder of mixed sizes.

Writes --images random-noise RGB PNGs of random heights and widths in
[--min_size, --max_size] (seeded), and a checkpoint of an FCN of --width
(random weights: timing does not depend on them) unless --workdir names one,
then runs `python -m fcn_jax.predict --verbose` on the folder once per
--buckets value, each in a fresh process, and prints a Markdown table:
compilations, their seconds, and the process's wall time (start-up, loading,
compiling, running, writing).

  python bench/predict_buckets.py --width=demo --buckets=8,64,128
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
WIDTHS = {
  'tiny': dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1),
  'demo': dict(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1),
  'full': {},
}
SUMMARY = re.compile(r'(\d+) images, (\d+) compilations \(([\d.]+) s\)')


def make_checkpoint(workdir: str, width: str) -> None:
  import jax
  from fcn_jax import checkpoint
  from fcn_jax.models import FCN, init_params

  model = FCN(**WIDTHS[width])
  params = jax.jit(lambda k: init_params(model, k))(jax.random.key(0))
  mngr = checkpoint.make_manager(workdir)
  checkpoint.save(
    mngr,
    0,
    params=params,
    config={'model': dict(WIDTHS[width], dtype='float32')},
    meta={},
  )
  mngr.wait_until_finished()
  mngr.close()


def make_images(
  folder: str, count: int, low: int, high: int, seed: int
) -> list[tuple[int, int]]:
  rng = np.random.default_rng(seed)
  sizes = [
    tuple(int(v) for v in rng.integers(low, high + 1, 2)) for _ in range(count)
  ]
  for i, (h, w) in enumerate(sizes):
    pixels = rng.integers(0, 256, (h, w, 3), np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f'{i:02d}.png'))
  return sizes


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--workdir', help='a checkpoint to use instead of a new one'
  )
  parser.add_argument('--width', choices=sorted(WIDTHS), default='demo')
  parser.add_argument('--images', type=int, default=20)
  parser.add_argument('--min_size', type=int, default=64)
  parser.add_argument('--max_size', type=int, default=384)
  parser.add_argument('--buckets', default='8,64,128')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  buckets = [int(b) for b in args.buckets.split(',')]
  env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or os.path.join(tmp, 'workdir')
    if not args.workdir:
      make_checkpoint(workdir, args.width)
    folder = os.path.join(tmp, 'images')
    os.makedirs(folder)
    sizes = make_images(
      folder, args.images, args.min_size, args.max_size, args.seed
    )
    print(
      f'{args.images} images, heights and widths in [{args.min_size}, '
      f'{args.max_size}]: {len(set(sizes))} distinct sizes, '
      f'{len({(-(-h // 8) * 8, -(-w // 8) * 8) for h, w in sizes})} '
      'distinct multiples of 8'
    )
    print('\n| bucket | compilations | compile s | wall s |')
    print('| --- | --- | --- | --- |')
    for bucket in buckets:
      out = os.path.join(tmp, f'out{bucket}')
      start = time.perf_counter()
      proc = subprocess.run(
        [
          sys.executable,
          '-m',
          'fcn_jax.predict',
          f'--workdir={workdir}',
          f'--input={folder}',
          f'--output={out}',
          f'--bucket={bucket}',
          '--verbose',
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
      )
      wall = time.perf_counter() - start
      found = SUMMARY.search(proc.stderr)
      if proc.returncode or not found:
        sys.exit(f'error: predict --bucket={bucket} failed:\n{proc.stderr}')
      print(
        f'| {bucket} | {found.group(2)} | {float(found.group(3)):.1f} | '
        f'{wall:.1f} |',
        flush=True,
      )


if __name__ == '__main__':
  main()
