"""Type 'aligned': RealBlur's aligned PSNR/SSIM beside the plain figures.

Real camera pairs are not pixel aligned, so the published RealBlur scores
(the RealBlur paper, MPRNet, Restormer and later work) register each restored
image to its ground truth before scoring it: `fcn_jax.alignment` (intensity
match, ECC homography, warp of image and valid mask, PSNR/SSIM over the mask),
here in XLA on the evaluation devices. As in the published evaluation, the
restored image is scored at its 8-bit levels (it was read back from a PNG
there).

Everything else is the 'full_image' evaluator's: the same batches, restored
images and plain metrics (PSNR, both SSIM conventions), the same files
(`summary.json`, `per_image.csv`, `grid.png`, the restored PNGs when asked),
with these columns added, for the restored and the blurry image:

  aligned_psnr, aligned_ssim   the published RealBlur figures
  aligned_valid                share of the ground truth the warped image covers
  aligned_converged            1 where ECC ran its steps (0: it stopped where
                               OpenCV's findTransformECC would have raised)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from fcn_jax import alignment
from fcn_jax import cpu
from fcn_jax import distributed
from fcn_jax import inference
from fcn_jax import metrics
from fcn_jax.evaluators import common
from fcn_jax.evaluators import full_image

if (
  TYPE_CHECKING
):  # configs are ConfigDicts; importing this needs no ml_collections
  import ml_collections

ALIGNED = ('aligned_psnr', 'aligned_ssim', 'aligned_valid', 'aligned_converged')
METRICS = common.METRICS + ALIGNED


def _levels(x: jax.Array) -> jax.Array:
  """Floats in [0, 1] as their 8-bit PNG levels, back in [0, 1]."""
  return jnp.clip(jnp.round(x * 255.0), 0.0, 255.0) / 255.0


def _aligned(out: jax.Array, sharp: jax.Array, iterations, eps) -> dict:
  result = alignment.aligned_metrics(out, sharp, iterations=iterations, eps=eps)
  return {
    'aligned_psnr': result['psnr'],
    'aligned_ssim': result['ssim'],
    'aligned_valid': result['valid_fraction'],
    'aligned_converged': result['converged'].astype(jnp.float32),
  }


def make_eval_step(
  model,
  mesh: jax.sharding.Mesh,
  *,
  ensemble: bool = False,
  quantize: bool = True,
  iterations: int = alignment.ITERATIONS,
  eps: float = alignment.EPS,
) -> Callable[..., dict[str, jax.Array]]:
  """A jitted step: (params, blur, sharp) -> plain and aligned metrics."""

  @functools.partial(
    jax.jit,
    out_shardings=distributed.batch_sharding(mesh),
    compiler_options=cpu.compiler_options(),
  )
  def step(params, blur, sharp):
    restored = inference.restore(model, params, blur, ensemble=ensemble)
    out = dict(metrics.image_metrics(restored, sharp, quantize=quantize))
    out.update(_aligned(_levels(restored), sharp, iterations, eps))
    inputs = dict(metrics.image_metrics(blur, sharp, quantize=quantize))
    inputs.update(_aligned(blur, sharp, iterations, eps))
    out.update({f'input_{k}': v for k, v in inputs.items()})
    out['restored'] = restored
    return out

  return step


_shared_eval_step = functools.cache(make_eval_step)


@common.register('aligned')
class AlignedEvaluator(full_image.FullImageEvaluator):
  """Plain and RealBlur-aligned PSNR/SSIM of `options.dataset`."""

  @staticmethod
  def defaults() -> dict:
    """The fields of a config.evals entry of this type, with their defaults."""
    fields = full_image.FullImageEvaluator.defaults()
    fields.update(
      ecc_iterations=alignment.ITERATIONS,  # the published protocol: 100
      ecc_eps=alignment.EPS,  # and 0: all the iterations run
    )
    return fields

  @staticmethod
  def check(name: str, options: ml_collections.ConfigDict) -> Optional[str]:
    """What is wrong with `options`, in one line (None: nothing)."""
    error = full_image.FullImageEvaluator.check(name, options)
    if error:
      return error
    if options.ecc_iterations <= 0:
      return (
        f'config.evals.{name}.ecc_iterations={options.ecc_iterations} must '
        'be positive'
      )
    if options.ecc_eps < 0:
      return f'config.evals.{name}.ecc_eps={options.ecc_eps} must be >= 0'
    return None

  def __init__(self, name: str, options: ml_collections.ConfigDict, **kwargs):
    super().__init__(name, options, **kwargs)
    self._step_fn = _shared_eval_step(
      kwargs['model'],
      kwargs['mesh'],
      ensemble=options.ensemble,
      quantize=options.quantize,
      iterations=options.ecc_iterations,
      eps=float(options.ecc_eps),
    )

  def run(
    self, params: Any, step: int, out_dir: Optional[epath.PathLike] = None
  ) -> Iterator[tuple[str, Any]]:
    """Evaluates `params`; yields the summary's items (dataset, num_images,
    the mean plain and aligned metrics). Writes `<out_dir>/<dataset>/` when
    given, and the triplets to the writer at `step`."""
    folder = epath.Path(out_dir) / self.folder if out_dir else None
    save = folder is not None and self._options.save_images
    ids, rows, triplets = full_image.collect(
      self.dataset,
      self._data_dir,
      params,
      self._mesh,
      self._step_fn,
      global_batch_size=self._batch_size,
      image_dir=folder / 'images' if save else None,
      num_triplets=self._options.num_images_logged,
      crop=self._options.center_crop,
    )
    summary = common.summarise(self.dataset, rows, METRICS)
    if folder and jax.process_index() == 0:
      common.write(folder, summary, rows, ids, triplets, METRICS)
    if self._writer is not None and triplets:
      self._writer.write_images(
        step, {f'eval_{self.folder}_blurry_restored_sharp': np.stack(triplets)}
      )
    return iter(summary.items())
