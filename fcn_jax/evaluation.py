"""Full-resolution evaluation of GoPro, HIDE or synthetic test sets.

Each dataset is read by `fcn_jax.data.eval_iterator` (every image exactly
once, batches padded with masked entries), sharded over all devices on the
mesh's data axis, restored by the jit-compiled `inference.restore` (reflect
padding to a multiple of 8 inside XLA) and scored by XLA-compiled PSNR and both
SSIM conventions, for the restored and the blurry image. Writes
`<out_dir>/<dataset>/summary.json` and `per_image.csv` (and the restored PNGs
when asked).

`evaluate_all` evaluates every dataset of a config (the training loop and
--mode=eval both call it); `evaluate_dataset` is `collect`, `summarise` and
`write` of one dataset.
"""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from fcn_jax import image_io
from fcn_jax import inference
from fcn_jax import metrics
from fcn_jax import models

if TYPE_CHECKING:  # configs are ConfigDicts; this module runs without them
  import ml_collections

METRICS = ('psnr', 'ssim_matlab', 'ssim_per_channel')


def make_eval_step(
  model,
  mesh: jax.sharding.Mesh,
  *,
  ensemble: bool = False,
  quantize: bool = True,
) -> Callable[..., dict[str, jax.Array]]:
  """A jitted step: (params, blur, sharp) -> per-image metrics, restored images.

  `quantize=False` scores the float output (the release's validation PSNR)
  instead of its 8-bit levels.
  """
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))

  @functools.partial(
    jax.jit, out_shardings=data, compiler_options=models.compiler_options()
  )
  def step(params, blur, sharp):
    restored = inference.restore(model, params, blur, ensemble=ensemble)
    out = dict(metrics.image_metrics(restored, sharp, quantize=quantize))
    out.update(
      {
        f'input_{k}': v
        for k, v in metrics.image_metrics(
          blur, sharp, quantize=quantize
        ).items()
      }
    )
    out['restored'] = restored
    return out

  return step


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
  """The central size x size window of (N, H, W, C) images (as torchvision's
  `center_crop`, offsets round((H - size) / 2)); a side shorter than size is
  kept whole."""
  h, w = images.shape[1:3]
  ch, cw = min(size, h), min(size, w)
  top, left = int(round((h - ch) / 2)), int(round((w - cw) / 2))
  return images[:, top : top + ch, left : left + cw]


def _global(mesh, local: np.ndarray) -> jax.Array:
  sharding = jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec('data')
  )
  return jax.make_array_from_process_local_data(sharding, local)


def _local_rows(x: jax.Array) -> np.ndarray:
  """This host's rows of a batch-sharded array, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    key = s.index[0].start or 0
    if key not in seen:
      seen.add(key)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


def folder_name(spec: str) -> str:
  """The dataset spec as one folder or metric name ('a/b:c' -> 'a_b_c')."""
  return spec.replace('/', '_').replace(':', '_')


def collect(
  spec: str,
  data_dir: Optional[str],
  params: Any,
  mesh: jax.sharding.Mesh,
  step_fn: Callable[..., Any],
  *,
  global_batch_size: int,
  image_dir: Optional[epath.Path] = None,
  num_triplets: int = 0,
  crop: Optional[int] = None,
) -> tuple[list[str], dict[int, dict[str, float]], list[np.ndarray]]:
  """Runs `step_fn` over every image of `spec` (see `evaluate_dataset`).

  Returns:
    (ids, rows, triplets): the images' ids, each image's metrics by its
    index, and up to `num_triplets` images blurry | restored | sharp side by
    side. With `image_dir`, the restored images are written there as PNGs.
  """
  # fcn_jax.data imports TensorFlow; importing it here keeps this module
  # (and train.py, which imports it) importable without TensorFlow.
  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  ids = data.eval_ids(spec, data_dir)
  total = data.num_examples(spec, data_dir)
  if image_dir:
    image_dir.mkdir(parents=True, exist_ok=True)
  rows: dict[int, dict[str, float]] = {}
  triplets: list[np.ndarray] = []
  start, done = time.time(), 0
  for batch in data.eval_iterator(
    spec, data_dir, global_batch_size=global_batch_size
  ):
    if crop:
      batch = dict(
        batch,
        blur=center_crop(batch['blur'], crop),
        sharp=center_crop(batch['sharp'], crop),
      )
    out = step_fn(
      params, _global(mesh, batch['blur']), _global(mesh, batch['sharp'])
    )
    index = multihost_utils.process_allgather(
      _global(mesh, batch['index']), tiled=True
    )
    values = {
      k: multihost_utils.process_allgather(v, tiled=True)
      for k, v in out.items()
      if k != 'restored'
    }
    for row, i in enumerate(np.asarray(index)):
      if i >= 0:
        rows[int(i)] = {k: float(v[row]) for k, v in values.items()}
    if image_dir or len(triplets) < num_triplets:
      restored = _local_rows(out['restored'])
      for row, i in enumerate(batch['index']):
        if i < 0:
          continue
        if image_dir:
          image_io.write_png(
            image_dir / f'{ids[i].replace("/", "_")}.png',
            image_io.to_uint8(restored[row]),
          )
        h, w = batch['blur'].shape[1:3]
        if len(triplets) < num_triplets and (  # one shape, so they stack
          not triplets or triplets[0].shape == (h, 3 * w, 3)
        ):
          triplets.append(
            np.concatenate(
              [batch['blur'][row], restored[row], batch['sharp'][row]], axis=1
            )
          )
    done = len(rows)
    rate = done / max(time.time() - start, 1e-9)
    logging.info(
      'eval %s: %d/%d images, %.2f images/s, ETA %.0f s',
      spec,
      done,
      total,
      rate,
      (total - done) / max(rate, 1e-9),
    )
  if len(rows) != total:
    raise RuntimeError(f'evaluated {len(rows)} of the {total} images of {spec}')
  return ids, rows, triplets


def summarise(spec: str, rows: dict[int, dict[str, float]]) -> dict:
  """The summary: num_images and the mean metrics, restored then blurry."""
  summary = {'dataset': spec, 'num_images': len(rows)}
  for prefix in ('', 'input_'):
    for k in METRICS:
      key = prefix + k
      summary[key] = float(np.mean([r[key] for r in rows.values()]))
  return summary


def write(
  folder: epath.Path,
  summary: dict,
  rows: dict[int, dict[str, float]],
  ids: Sequence[str],
  triplets: Sequence[np.ndarray] = (),
) -> None:
  """Writes summary.json, per_image.csv and (with triplets) grid.png."""
  folder.mkdir(parents=True, exist_ok=True)
  image_io.write_atomic(
    folder / 'summary.json', json.dumps(summary, indent=2) + '\n'
  )
  lines = [['index', 'id', *METRICS, *(f'input_{k}' for k in METRICS)]]
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


def evaluate_dataset(
  spec: str,
  data_dir: Optional[str],
  params: Any,
  model,
  mesh: jax.sharding.Mesh,
  *,
  global_batch_size: int,
  ensemble: bool = False,
  out_dir: Optional[epath.PathLike] = None,
  save_images: bool = False,
  num_triplets: int = 0,
  step_fn: Optional[Callable[..., Any]] = None,
  crop: Optional[int] = None,
) -> tuple[dict, list[np.ndarray]]:
  """Evaluates `params` on every image of `spec`.

  With `crop`, on the central crop x crop window of each image instead (the
  release's validation on 256x256 centre crops).

  Returns:
    (summary, triplets): the summary dict (num_images and the mean metrics of
    the restored and of the blurry images) and up to `num_triplets` images
    blurry | restored | sharp side by side, for logging (also written one
    under another to `<out_dir>/<dataset>/grid.png`).
  """
  step_fn = step_fn or make_eval_step(model, mesh, ensemble=ensemble)
  folder = epath.Path(out_dir) / folder_name(spec) if out_dir else None
  image_dir = folder / 'images' if folder and save_images else None
  ids, rows, triplets = collect(
    spec,
    data_dir,
    params,
    mesh,
    step_fn,
    global_batch_size=global_batch_size,
    image_dir=image_dir,
    num_triplets=num_triplets,
    crop=crop,
  )
  summary = summarise(spec, rows)
  if folder and jax.process_index() == 0:
    write(folder, summary, rows, ids, triplets)
  return summary, triplets


def evaluate_all(
  config: ml_collections.ConfigDict,
  params: Any,
  model,
  mesh: jax.sharding.Mesh,
  step_fn: Callable[..., Any],
  *,
  data_dir: Optional[str],
  out_dir: Optional[epath.PathLike] = None,
  save_images: bool = False,
  writer: Optional[Any] = None,
  step: int = 0,
) -> list[dict]:
  """Evaluates `params` on each of config.eval_datasets, in order.

  Results go to `<out_dir>/<dataset>/` (see `evaluate_dataset`) and, with a
  clu metric `writer`, to its `eval_<dataset>_*` scalars and images at `step`.
  The training loop and --mode=eval both evaluate through here.

  Returns:
    The summaries, one per dataset.
  """
  summaries = []
  for spec in config.eval_datasets:
    summary, images = evaluate_dataset(
      spec,
      data_dir,
      params,
      model,
      mesh,
      global_batch_size=config.eval_batch_size,
      step_fn=step_fn,
      out_dir=out_dir,
      save_images=save_images,
      num_triplets=config.num_eval_images_logged,
      crop=config.eval.center_crop,
    )
    summaries.append(summary)
    if writer is not None:
      name = folder_name(spec)
      writer.write_scalars(
        step,
        {
          f'eval_{name}_{k}': v
          for k, v in summary.items()
          if isinstance(v, float)
        },
      )
      if images:
        writer.write_images(
          step, {f'eval_{name}_blurry_restored_sharp': np.stack(images)}
        )
  return summaries


def format_table(summaries: list[dict]) -> str:
  """A plain-text table of the summaries, restored against blurry."""
  rows = [
    (f'{s["dataset"]} {label}', s, prefix)
    for s in summaries
    for label, prefix in (('restored', ''), ('blurry', 'input_'))
  ]
  width = max([len('dataset')] + [len(name) for name, _, _ in rows])
  head = f'{"dataset":<{width}} {"images":>6} {"PSNR":>8} {"SSIM(matlab)":>13} {"SSIM(per-ch)":>13}'
  lines = [head, '-' * len(head)]
  for name, s, prefix in rows:
    lines.append(
      f'{name:<{width}} {s["num_images"]:>6} {s[prefix + "psnr"]:>8.3f} '
      f'{s[prefix + "ssim_matlab"]:>13.4f} {s[prefix + "ssim_per_channel"]:>13.4f}'
    )
  return '\n'.join(lines)
