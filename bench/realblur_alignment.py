"""Benchmark: RealBlur's aligned PSNR/SSIM, XLA (`fcn_jax.alignment`) vs OpenCV.

The OpenCV path is the published evaluation per image (intensity match,
`cv2.findTransformECC` homography with 100 iterations, `cv2.warpPerspective`
of image and mask, masked PSNR and skimage's SSIM), one image at a time in
one process, as each worker of the authors' process pool runs it. The XLA
path is `alignment.aligned_metrics`, jit-compiled once per shape, at batch 1
and at batch --batch. Both see the same pairs: photos from skimage.data
resized to the RealBlur size (default 680x773), blurred by a motion kernel
and moved by a small homography. Also reported: the agreement of the two
(warp at the image corners, PSNR, SSIM).

  python bench/realblur_alignment.py [--height 680] [--width 773] [--images 4]
      [--batch 4] [--out report.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from skimage import data, transform
from skimage.metrics import structural_similarity

from fcn_jax import alignment


def make_pairs(n: int, height: int, width: int):
  """`n` (restored-like, ground truth) float32 pairs in [0, 1]."""
  photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
  rng = np.random.default_rng(0)
  outs, gts = [], []
  for i in range(n):
    gt = transform.resize(
      photos[i % len(photos)], (height, width), anti_aliasing=True
    ).astype(np.float32)
    kernel = np.zeros((15, 15), np.float32)
    kernel[7, :] = 1
    rotation = cv2.getRotationMatrix2D((7, 7), 25.0 * i, 1)
    kernel = cv2.warpAffine(kernel, rotation, (15, 15))
    kernel /= kernel.sum()
    blurred = cv2.filter2D(gt, -1, kernel, borderType=cv2.BORDER_REFLECT)
    homography = np.array(
      [
        [1 + rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01), 2.0],
        [rng.uniform(-0.01, 0.01), 1 + rng.uniform(-0.01, 0.01), -1.5],
        [rng.uniform(-1e-5, 1e-5), rng.uniform(-1e-5, 1e-5), 1],
      ],
      np.float32,
    )
    moved = cv2.warpPerspective(
      blurred,
      homography,
      (width, height),
      flags=cv2.INTER_LINEAR,
      borderMode=cv2.BORDER_REFLECT,
    )
    outs.append(np.clip(moved * 0.95, 0, 1))
    gts.append(gt)
  return np.stack(outs), np.stack(gts)


def opencv_aligned(restored: np.ndarray, target: np.ndarray):
  """The published evaluation of one image: (warp, psnr, ssim)."""
  zs = (np.sum(target * restored) / np.sum(restored * restored)) * restored
  criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 0)
  _, warp = cv2.findTransformECC(
    cv2.cvtColor(target, cv2.COLOR_RGB2GRAY),
    cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY),
    np.eye(3, dtype=np.float32),
    cv2.MOTION_HOMOGRAPHY,
    criteria,
    None,
    5,
  )
  size = (target.shape[1], target.shape[0])
  zr = cv2.warpPerspective(
    zs,
    warp,
    size,
    flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_REFLECT,
  )
  cr = cv2.warpPerspective(
    np.ones_like(zs),
    warp,
    size,
    flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=0,
  )
  zr, xr = zr * cr, target * cr
  err = np.sum((xr - zr) ** 2, dtype=np.float64) / np.sum(cr)
  psnr = 10 * np.log10(1 / err)
  # In float64, as skimage 0.17.2 (the version the RealBlur authors pin)
  # computes it; skimage >= 0.19 keeps float32 inputs in float32, which moves
  # the figure by up to 4e-4 on 680x773 images.
  _, ssim_map = structural_similarity(
    xr.astype(np.float64),
    zr.astype(np.float64),
    channel_axis=-1,
    gaussian_weights=True,
    use_sample_covariance=False,
    data_range=1.0,
    full=True,
  )
  crop = (ssim_map * cr)[5:-5, 5:-5]
  ssim = np.mean(crop.sum(axis=(0, 1)) / cr[5:-5, 5:-5].sum(axis=(0, 1)))
  return warp, psnr, float(ssim)


def _corners(warp: np.ndarray, height: int, width: int) -> np.ndarray:
  c = np.array(
    [
      [0, 0, 1],
      [width - 1, 0, 1],
      [0, height - 1, 1],
      [width - 1, height - 1, 1],
    ],
    float,
  ).T
  p = warp.astype(np.float64) @ c
  return (p[:2] / p[2]).T


def _timed(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--height', type=int, default=680)
  parser.add_argument('--width', type=int, default=773)
  parser.add_argument('--images', type=int, default=4)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=None, help='also write the report here')
  args = parser.parse_args()
  h, w = args.height, args.width
  restored, target = make_pairs(max(args.images, args.batch), h, w)

  cv_rows = []
  start = time.perf_counter()
  for i in range(args.images):
    cv_rows.append(opencv_aligned(restored[i], target[i]))
  cv_per_image = (time.perf_counter() - start) / args.images

  one = lambda i: jax.block_until_ready(
    alignment.aligned_metrics(jnp.asarray(restored[i]), jnp.asarray(target[i]))
  )
  start = time.perf_counter()
  one(0)
  compile_one = time.perf_counter() - start
  xla_rows = [one(i) for i in range(args.images)]
  t_one = _timed(lambda: one(0), args.repeats)

  batch = lambda: jax.block_until_ready(
    alignment.aligned_metrics(
      jnp.asarray(restored[: args.batch]), jnp.asarray(target[: args.batch])
    )
  )
  start = time.perf_counter()
  batch()
  compile_batch = time.perf_counter() - start
  t_batch = _timed(batch, args.repeats)

  corner = max(
    np.abs(_corners(np.asarray(x['warp']), h, w) - _corners(c[0], h, w)).max()
    for x, c in zip(xla_rows, cv_rows)
  )
  dpsnr = max(abs(float(x['psnr']) - c[1]) for x, c in zip(xla_rows, cv_rows))
  dssim = max(abs(float(x['ssim']) - c[2]) for x, c in zip(xla_rows, cv_rows))
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  lines = [
    f'## RealBlur aligned PSNR/SSIM, {h}x{w}, XLA vs OpenCV',
    '',
    f'Machine: {platform.processor() or platform.machine()}, '
    f'{os.cpu_count()} CPU cores, backend {jax.default_backend()} '
    f'({jax.devices()[0].device_kind}), load average {load:.1f} at the end; '
    f'OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), '
    f'jax {jax.__version__}.',
    '',
    '| path | s / image | notes |',
    '| --- | --- | --- |',
    f'| OpenCV + skimage, one image at a time | {cv_per_image:.3f} | '
    f'mean of {args.images} images |',
    f'| XLA, batch 1 | {statistics.median(t_one):.3f} | median of '
    f'{args.repeats}; compile {compile_one:.1f} s once per shape |',
    f'| XLA, batch {args.batch} | '
    f'{statistics.median(t_batch) / args.batch:.3f} | median of '
    f'{args.repeats}; compile {compile_batch:.1f} s |',
    '',
    f'Agreement over {args.images} pairs (max): warp at the corners '
    f'{corner:.4f} px, PSNR {dpsnr:.5f} dB, SSIM {dssim:.2e}.',
  ]
  report = '\n'.join(lines)
  print(report)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(report + '\n')


if __name__ == '__main__':
  main()
