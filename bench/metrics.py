"""Benchmark: jit-compiled `fcn_jax.metrics` vs scikit-image on 720p pairs.

JAX side: `image_metrics` (PSNR + MATLAB SSIM + per-channel SSIM) on one
`(N, 720, 1280, 3)` uint8 batch. scikit-image side: `peak_signal_noise_ratio`
+ `structural_similarity` (per-channel convention only) per image, in a loop.
Both see the same pairs, made from upscaled scikit-image photographs and
degraded copies (Gaussian blur, motion blur, noise, down-up sampling).

  python bench/metrics.py [--batch 4] [--height 720] [--width 1280]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np
from scipy import ndimage
from skimage import data, metrics as skmetrics, transform

from fcn_jax import metrics


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_pairs(
  n: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
  """`n` (sharp, degraded) uint8 pairs of `height x width x 3`."""
  rng = np.random.default_rng(0)
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
  sharp, degraded = [], []
  for i in range(n):
    photo = transform.resize(
      photos[i % len(photos)], (height, width), order=3, anti_aliasing=False
    )  # floats in [0, 1]
    s = _to_uint8(photo * 255.0).astype(np.float64)
    kind = i % 4
    if kind == 0:
      d = ndimage.gaussian_filter(s, (2.0, 2.0, 0))
    elif kind == 1:
      line = np.full((1, 15, 1), 1.0 / 15)  # horizontal motion blur
      d = ndimage.convolve(s, line, mode='nearest')
    elif kind == 2:
      d = ndimage.gaussian_filter(s, (1.0, 1.0, 0)) + rng.normal(0, 5, s.shape)
    else:
      small = transform.resize(
        s,
        (height // 3, width // 3),
        order=1,
        anti_aliasing=True,
        preserve_range=True,
      )
      d = transform.resize(small, (height, width), order=1, preserve_range=True)
    sharp.append(_to_uint8(s))
    degraded.append(_to_uint8(d))
  return np.stack(sharp), np.stack(degraded)


def _timed(fn, repeats: int) -> tuple[list[float], list[float]]:
  """Wall-clock and process CPU seconds (all threads) of each call."""
  walls, cpus = [], []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    cpus.append(time.process_time() - cpu)
    walls.append(time.perf_counter() - wall)
  return walls, cpus


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--height', type=int, default=720)
  parser.add_argument('--width', type=int, default=1280)
  parser.add_argument('--repeats', type=int, default=5, help='JAX timings')
  parser.add_argument(
    '--sk_repeats', type=int, default=2, help='scikit-image timings'
  )
  args = parser.parse_args()

  sharp, degraded = make_pairs(args.batch, args.height, args.width)
  print(
    f'{args.batch} pairs of {args.height}x{args.width}x3 uint8; '
    f'jax {jax.__version__} on {jax.devices()[0].platform} '
    f'({os.cpu_count()} CPUs, {platform.machine()})'
  )

  a, b = jax.device_put(sharp), jax.device_put(degraded)
  start = time.perf_counter()
  ours = jax.block_until_ready(metrics.image_metrics(a, b))
  compile_s = time.perf_counter() - start
  jax_times, jax_cpu = _timed(
    lambda: jax.block_until_ready(metrics.image_metrics(a, b)), args.repeats
  )

  def run_skimage():
    out = []
    for x, y in zip(sharp, degraded):
      p = skmetrics.peak_signal_noise_ratio(x, y, data_range=255)
      s = skmetrics.structural_similarity(
        x,
        y,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=255,
      )
      out.append((p, s))
    return np.array(out)

  ref = run_skimage()
  sk_times, sk_cpu = _timed(run_skimage, args.sk_repeats)

  jax_s, sk_s = min(jax_times), min(sk_times)
  print(
    f'jax  psnr+ssim(matlab)+ssim(per_channel): best {jax_s:.4f} s, '
    f'median {statistics.median(jax_times):.4f} s, '
    f'cpu {min(jax_cpu):.4f} s '
    f'(first call incl. compile {compile_s:.2f} s)'
  )
  print(
    f'skimage psnr+ssim(per_channel), loop:     best {sk_s:.4f} s, '
    f'median {statistics.median(sk_times):.4f} s, cpu {min(sk_cpu):.4f} s'
  )
  print(
    f'speed-up, wall (best/best): {sk_s / jax_s:.1f}x; '
    f'cpu time: {min(sk_cpu) / min(jax_cpu):.1f}x; '
    f'1-min load average: {os.getloadavg()[0]:.2f}'
  )
  print(
    'max |jax - skimage|: psnr %.2e dB, ssim per_channel %.2e'
    % (
      np.max(np.abs(np.asarray(ours['psnr']) - ref[:, 0])),
      np.max(np.abs(np.asarray(ours['ssim_per_channel']) - ref[:, 1])),
    )
  )
  for i in range(args.batch):
    print(
      f'  pair {i}: psnr {float(ours["psnr"][i]):.3f} dB, ssim matlab '
      f'{float(ours["ssim_matlab"][i]):.4f}, per_channel '
      f'{float(ours["ssim_per_channel"][i]):.4f}'
    )


if __name__ == '__main__':
  main()
