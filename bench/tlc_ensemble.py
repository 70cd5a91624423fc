"""Benchmark: plain vs TLC vs x8 ensemble evaluation of one checkpoint.

Evaluates the checkpoint `fcn_jax.checkpoint.find(--workdir)` picks on every
image of --dataset at full resolution through `fcn_jax.evaluators.
full_image.evaluate_dataset` (all devices on one data axis, as --mode=eval does): plainly,
with test-time local statistics (TLC) at each --tlc_sizes (the model's
`tlc_train_size`), and with --ensemble also with the x8 geometric
self-ensemble. Prints a Markdown table to stdout.

TLC matters when a model trained on small crops meets much larger images: with
`tlc_train_size` at least the image size it changes nothing.

  python bench/tlc_ensemble.py --workdir=runs/gopro --dataset=gopro/blur:test \
      --data_dir=~/tensorflow_datasets --tlc_sizes=256,384 --ensemble
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Optional

import jax
from jax.experimental import multihost_utils

from fcn_jax import checkpoint
from fcn_jax import distributed
from fcn_jax import models
from fcn_jax.evaluators import full_image


class _TimedStep:
  """Wraps an eval step; splits its time into first calls per shape and the rest.

  Blocking on each step costs nothing here: `evaluate_dataset` gathers every
  step's metrics to the host right after the call anyway.
  """

  def __init__(self, step: Callable[..., Any]):
    self.step = step
    self.shapes: set[tuple[int, ...]] = set()
    self.first_s = 0.0  # compilation and the first batch of each shape
    self.warm_s = 0.0  # every other batch
    self.warm_batches = 0

  def __call__(self, params, blur, sharp):
    start = time.perf_counter()
    out = jax.block_until_ready(self.step(params, blur, sharp))
    elapsed = time.perf_counter() - start
    if blur.shape in self.shapes:
      self.warm_s += elapsed
      self.warm_batches += 1
    else:
      self.shapes.add(blur.shape)
      self.first_s += elapsed
    return out


def run(
  label: str,
  model,
  params,
  mesh: jax.sharding.Mesh,
  *,
  dataset: str,
  data_dir: Optional[str],
  batch_size: int,
  ensemble: bool,
) -> dict:
  """One full evaluation; its summary with the label and timings added."""
  step = _TimedStep(full_image.make_eval_step(model, mesh, ensemble=ensemble))
  start = time.perf_counter()
  summary, _ = full_image.evaluate_dataset(
    dataset, data_dir, params, mesh, step, global_batch_size=batch_size
  )
  summary.update(
    label=label,
    seconds=time.perf_counter() - start,
    first_s=step.first_s,
    warm_batch_s=(
      step.warm_s / step.warm_batches if step.warm_batches else float('nan')
    ),
  )
  return summary


def markdown(rows: list[dict], plain_psnr: float) -> str:
  """The table: one line per method, plus the blurry input for reference."""
  lines = [
    '| method | PSNR | SSIM (MATLAB) | SSIM (per-channel) | ΔPSNR vs plain '
    '| seconds | first call per shape (s) | warm batch (s) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  first = rows[0]
  lines.append(
    f'| blurry input | {first["input_psnr"]:.3f} | '
    f'{first["input_ssim_matlab"]:.4f} | '
    f'{first["input_ssim_per_channel"]:.4f} | '
    f'{first["input_psnr"] - plain_psnr:+.3f} | | | |'
  )
  for r in rows:
    lines.append(
      f'| {r["label"]} | {r["psnr"]:.3f} | {r["ssim_matlab"]:.4f} | '
      f'{r["ssim_per_channel"]:.4f} | {r["psnr"] - plain_psnr:+.3f} | '
      f'{r["seconds"]:.1f} | {r["first_s"]:.1f} | {r["warm_batch_s"]:.3f} |'
    )
  return '\n'.join(lines)


def _parse_sizes(text: str) -> list[int]:
  sizes = [int(s) for s in text.split(',') if s.strip()]
  if any(s <= 0 for s in sizes):
    raise argparse.ArgumentTypeError(
      f'TLC sizes must be positive, got {text!r}'
    )
  return sizes


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--workdir', required=True, help='training or conversion workdir'
  )
  parser.add_argument(
    '--dataset', required=True, help="TFDS spec, e.g. 'gopro/blur:test'"
  )
  parser.add_argument('--data_dir', default=None, help='TFDS data_dir')
  parser.add_argument(
    '--tlc_sizes',
    type=_parse_sizes,
    default=[64, 96, 128],
    help='comma-separated tlc_train_size values (empty: none)',
  )
  parser.add_argument(
    '--ensemble', action='store_true', help='also the x8 ensemble'
  )
  parser.add_argument(
    '--batch_size',
    type=int,
    default=None,
    help='global eval batch (default: the device count)',
  )
  parser.add_argument(
    '--dtype',
    default=None,
    help="computation dtype override (default: the checkpoint's)",
  )
  args = parser.parse_args(argv)
  args.data_dir = os.path.expanduser(args.data_dir) if args.data_dir else None
  args.batch_size = args.batch_size or jax.device_count()
  if args.batch_size % jax.device_count():
    sys.exit(
      f'error: --batch_size={args.batch_size} is not divisible by the '
      f'{jax.device_count()} devices'
    )

  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  mesh = distributed.make_mesh()
  replicated = distributed.replicated(mesh)
  try:
    params, saved = checkpoint.load_params(args.workdir, sharding=replicated)
    if jax.process_index() == 0:  # builds a missing synthetic_blur config
      data.prepare_synthetic(args.dataset, args.data_dir)
    multihost_utils.sync_global_devices('dataset prepared')
    data.check_dataset(args.dataset, args.data_dir)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  overrides = {'dtype': args.dtype} if args.dtype else {}

  plain = {'tlc_train_size': None}  # even if the checkpoint's config sets one
  methods = [('plain', plain, False)]
  methods += [
    (f'TLC {s}', {'tlc_train_size': s}, False) for s in args.tlc_sizes
  ]
  if args.ensemble:
    methods.append(('x8 ensemble', plain, True))
  rows = []
  for label, fields, ensemble in methods:
    model = models.model_from_config(saved, **overrides, **fields)
    rows.append(
      run(
        label,
        model,
        params,
        mesh,
        dataset=args.dataset,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        ensemble=ensemble,
      )
    )
    print(
      f'{label}: PSNR {rows[-1]["psnr"]:.3f} in {rows[-1]["seconds"]:.1f} s',
      file=sys.stderr,
      flush=True,
    )
  if jax.process_index() == 0:
    print(
      f'{args.dataset}: {rows[0]["num_images"]} images, checkpoint {args.workdir} '
      f'({checkpoint.find(args.workdir)[0]}), global batch {args.batch_size}, '
      f'{jax.device_count()} x {jax.devices()[0].device_kind}\n'
    )
    print(markdown(rows, rows[0]['psnr']))


if __name__ == '__main__':
  main()
