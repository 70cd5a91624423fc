r"""A GoPro-trained FCN evaluated on RealBlur-J and RealBlur-R, as published.

MPRNet, Restormer, Stripformer and FFTformer report RealBlur-J/R for models
trained on GoPro alone: every test image (980 per set) restored at full size,
then scored with RealBlur's aligned PSNR/SSIM (evaluator type 'aligned':
intensity match, ECC homography with 100 iterations, warp, PSNR/SSIM over the
valid region), here beside the plain figures. The architecture is the
checkpoint's; `realblur_j` picks the best checkpoint when there are several.

  tfds build tfds_gopro/realblur --manual_dir=<RealBlur folder> \
      --data_dir=~/tensorflow_datasets
  python main.py --mode=eval --config=configs/realblur_eval.py \
      --workdir=runs/gopro --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from configs import gopro
from fcn_jax import evaluators


def get_config():
  config = gopro.get_config()
  config.evals = ml_collections.ConfigDict(
    dict(
      realblur_j=evaluators.evaluator_config('aligned', 'realblur/j:test'),
      realblur_r=evaluators.evaluator_config('aligned', 'realblur/r:test'),
    ),
    sort_keys=False,
  )
  config.best_eval = 'realblur_j'
  return config
