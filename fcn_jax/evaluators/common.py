"""What evaluators share: the registry, output names, this host's rows, the files."""

from __future__ import annotations

import json
from typing import Callable, Sequence

from etils import epath
import jax
import numpy as np

from fcn_jax import image_io

METRICS = ('psnr', 'ssim_matlab', 'ssim_per_channel')

REGISTRY: dict[str, type] = {}  # config.evals.<name>.type -> its class


def register(name: str) -> Callable[[type], type]:
  """Class decorator: the evaluators of `type=name` are instances of the class."""

  def add(cls: type) -> type:
    REGISTRY[name] = cls
    return cls

  return add


def folder_name(spec: str) -> str:
  """The dataset spec as one folder or metric name ('a/b:c' -> 'a_b_c')."""
  return spec.replace('/', '_').replace(':', '_')


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
  """The central size x size window of (N, H, W, C) images (as torchvision's
  `center_crop`, offsets round((H - size) / 2)); a side shorter than size is
  kept whole."""
  h, w = images.shape[1:3]
  ch, cw = min(size, h), min(size, w)
  top, left = int(round((h - ch) / 2)), int(round((w - cw) / 2))
  return images[:, top : top + ch, left : left + cw]


def local_rows(x: jax.Array) -> np.ndarray:
  """This host's rows of a batch-sharded array, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    key = s.index[0].start or 0
    if key not in seen:
      seen.add(key)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


def summarise(
  spec: str, rows: dict[int, dict[str, float]], metrics: Sequence[str] = METRICS
) -> dict:
  """The summary: num_images and the mean metrics, restored then blurry."""
  summary = {'dataset': spec, 'num_images': len(rows)}
  for prefix in ('', 'input_'):
    for k in metrics:
      key = prefix + k
      summary[key] = float(np.mean([r[key] for r in rows.values()]))
  return summary


def write(
  folder: epath.Path,
  summary: dict,
  rows: dict[int, dict[str, float]],
  ids: Sequence[str],
  triplets: Sequence[np.ndarray] = (),
  metrics: Sequence[str] = METRICS,
) -> None:
  """Writes summary.json, per_image.csv and (with triplets) grid.png."""
  folder.mkdir(parents=True, exist_ok=True)
  image_io.write_atomic(
    folder / 'summary.json', json.dumps(summary, indent=2) + '\n'
  )
  lines = [['index', 'id', *metrics, *(f'input_{k}' for k in metrics)]]
  for i in sorted(rows):
    lines.append([i, ids[i], *(f'{rows[i][k]:.6f}' for k in lines[0][2:])])
  image_io.write_atomic(
    folder / 'per_image.csv',
    ''.join(','.join(map(str, l)) + '\n' for l in lines),
  )
  if triplets:
    image_io.write_png(
      folder / 'grid.png', image_io.to_uint8(np.concatenate(triplets, axis=0))
    )


def format_table(summaries: list[dict]) -> str:
  """A plain-text table of the summaries, restored against blurry.

  Summaries with RealBlur's aligned figures (type 'aligned') add the columns
  aligned PSNR and aligned SSIM; the others leave them blank.
  """
  rows = [
    (f'{s["dataset"]} {label}', s, prefix)
    for s in summaries
    for label, prefix in (('restored', ''), ('blurry', 'input_'))
  ]
  aligned = any('aligned_psnr' in s for s in summaries)
  width = max([len('dataset')] + [len(name) for name, _, _ in rows])
  head = f'{"dataset":<{width}} {"images":>6} {"PSNR":>8} {"SSIM(matlab)":>13} {"SSIM(per-ch)":>13}'
  if aligned:
    head += f' {"aligned PSNR":>12} {"aligned SSIM":>12}'
  lines = [head, '-' * len(head)]
  for name, s, prefix in rows:
    line = (
      f'{name:<{width}} {s["num_images"]:>6} {s[prefix + "psnr"]:>8.3f} '
      f'{s[prefix + "ssim_matlab"]:>13.4f} {s[prefix + "ssim_per_channel"]:>13.4f}'
    )
    if prefix + 'aligned_psnr' in s:
      line += (
        f' {s[prefix + "aligned_psnr"]:>12.3f}'
        f' {s[prefix + "aligned_ssim"]:>12.4f}'
      )
    lines.append(line)
  return '\n'.join(lines)
