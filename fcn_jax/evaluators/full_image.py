"""Type 'full_image': PSNR and both SSIM conventions on every image of a test set.

Each dataset is read by `fcn_jax.data.eval_iterator` (every image exactly
once, batches padded with masked entries), sharded over all devices on the
mesh's data axis, restored by the jit-compiled `inference.restore` (reflect
padding to a multiple of 8 inside XLA) and scored by XLA-compiled PSNR and both
SSIM conventions, for the restored and the blurry image. Writes
`<out_dir>/<dataset>/summary.json` and `per_image.csv` (and the restored PNGs
when asked).

`evaluate_dataset` is `collect`, `summarise` and `write` of one dataset; the
evaluator runs it on its schedule and logs its images.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from fcn_jax import cpu
from fcn_jax import distributed
from fcn_jax import image_io
from fcn_jax import inference
from fcn_jax import metrics
from fcn_jax.evaluators import common

if (
  TYPE_CHECKING
):  # configs are ConfigDicts; importing this needs no ml_collections
  import ml_collections


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

  @functools.partial(
    jax.jit,
    out_shardings=distributed.batch_sharding(mesh),
    compiler_options=cpu.compiler_options(),
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


# Evaluators with the same model and options share one compiled step.
_shared_eval_step = functools.cache(make_eval_step)


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
  # (and the trainer, which imports it) importable without TensorFlow.
  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  sharding = distributed.batch_sharding(mesh)

  def on_devices(local: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(sharding, local)

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
        blur=common.center_crop(batch['blur'], crop),
        sharp=common.center_crop(batch['sharp'], crop),
      )
    out = step_fn(params, on_devices(batch['blur']), on_devices(batch['sharp']))
    index = multihost_utils.process_allgather(
      on_devices(batch['index']), tiled=True
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
      restored = common.local_rows(out['restored'])
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


def evaluate_dataset(
  spec: str,
  data_dir: Optional[str],
  params: Any,
  mesh: jax.sharding.Mesh,
  step_fn: Callable[..., Any],
  *,
  global_batch_size: int,
  out_dir: Optional[epath.PathLike] = None,
  save_images: bool = False,
  num_triplets: int = 0,
  crop: Optional[int] = None,
) -> tuple[dict, list[np.ndarray]]:
  """Evaluates `params` with `step_fn` (`make_eval_step`) on every image of `spec`.

  With `crop`, on the central crop x crop window of each image instead (the
  release's validation on 256x256 centre crops).

  Returns:
    (summary, triplets): the summary dict (num_images and the mean metrics of
    the restored and of the blurry images) and up to `num_triplets` images
    blurry | restored | sharp side by side, for logging (also written one
    under another to `<out_dir>/<dataset>/grid.png`).
  """
  folder = epath.Path(out_dir) / common.folder_name(spec) if out_dir else None
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
  summary = common.summarise(spec, rows)
  if folder and jax.process_index() == 0:
    common.write(folder, summary, rows, ids, triplets)
  return summary, triplets


@common.register('full_image')
class FullImageEvaluator:
  """PSNR/SSIM of the restored and the blurry images of `options.dataset`.

  Its outputs are named after the dataset: `<out_dir>/<a_b_c>/` and the
  writer's `eval_<a_b_c>_*` scalars and images for dataset 'a/b:c'.
  """

  @staticmethod
  def defaults() -> dict:
    """The fields of a config.evals entry of this type, with their defaults."""
    from ml_collections import config_dict  # pylint: disable=g-import-not-at-top

    return dict(
      every_steps=0,  # 0: evaluate only at the end of training
      # A second, denser period from a step on (the paper: every 15 epochs
      # after epoch 300); 0 disables it.
      every_steps_late=0,
      late_from_step=0,
      num_images_logged=3,  # blurry | restored | sharp triplets
      ensemble=False,  # x8 geometric self-ensemble
      save_images=False,  # write the restored PNGs under workdir/eval/
      # The release's validation: the central crop x crop window of each image
      # (None: whole images) and PSNR/SSIM of the float output (False) rather
      # than of its 8-bit levels (True).
      center_crop=config_dict.placeholder(int),
      quantize=True,
    )

  @staticmethod
  def check(name: str, options: ml_collections.ConfigDict) -> Optional[str]:
    """What is wrong with `options`, in one line (None: nothing)."""
    if options.center_crop is not None and options.center_crop <= 0:
      return (
        f'config.evals.{name}.center_crop={options.center_crop} must be '
        'positive'
      )
    return None

  def __init__(
    self,
    name: str,
    options: ml_collections.ConfigDict,
    *,
    model,
    mesh: jax.sharding.Mesh,
    data_dir: Optional[str],
    batch_size: int,
    writer: Optional[Any] = None,
  ):
    self.name = name
    self.dataset = options.dataset
    self.folder = common.folder_name(options.dataset)
    self._options = options
    self._mesh = mesh
    self._data_dir = data_dir
    self._batch_size = batch_size
    self._writer = writer
    self._step_fn = _shared_eval_step(
      model, mesh, ensemble=options.ensemble, quantize=options.quantize
    )

  def every(self, step: int) -> int:
    """The evaluation period at `step` (0: only at the end)."""
    o = self._options
    if o.every_steps_late > 0 and step > o.late_from_step:
      return o.every_steps_late
    return o.every_steps

  def run(
    self, params: Any, step: int, out_dir: Optional[epath.PathLike] = None
  ) -> Iterator[tuple[str, Any]]:
    """Evaluates `params`; yields the summary's items (dataset, num_images,
    the mean metrics). Writes `<out_dir>/<dataset>/` when given, and the
    triplets to the writer at `step`."""
    summary, triplets = evaluate_dataset(
      self.dataset,
      self._data_dir,
      params,
      self._mesh,
      self._step_fn,
      global_batch_size=self._batch_size,
      out_dir=out_dir,
      save_images=self._options.save_images,
      num_triplets=self._options.num_images_logged,
      crop=self._options.center_crop,
    )
    if self._writer is not None and triplets:
      self._writer.write_images(
        step, {f'eval_{self.folder}_blurry_restored_sharp': np.stack(triplets)}
      )
    return iter(summary.items())
