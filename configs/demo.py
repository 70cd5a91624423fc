r"""The out-of-the-box demo: FCN learns to remove camera shake on a CPU.

Prepares the synthetic camera-shake dataset `synthetic_blur/mild` from the
photographs bundled with scikit-image (no download: 2 to 6 pixel camera paths
on 128x128 crops, held-out test photos), trains a reduced-width FCN for about
ten minutes on 2 CPU cores, evaluates it on the held-out photos and writes the
summary (restored against blurry, PSNR and both SSIMs) and an image grid
(blurry | restored | sharp) under runs/demo/eval/.

  python main.py --config=configs/demo.py --workdir=runs/demo     # or: make demo
"""

import ml_collections

from configs import default
from fcn_jax import evaluators
from fcn_jax.models import presets


def get_config():
  config = default.get_config()
  config.model.update(presets.DEMO)
  config.data_dir = 'runs/data'
  config.train_dataset = 'synthetic_blur/mild:train'
  config.evals = ml_collections.ConfigDict(
    dict(
      mild=evaluators.evaluator_config(
        'full_image',
        'synthetic_blur/mild:test',
        every_steps=400,
        num_images_logged=6,  # also runs/demo/eval/<dataset>/grid.png
      )
    ),
    sort_keys=False,
  )
  config.best_eval = 'mild'
  config.batch_size = 8
  config.eval_batch_size = 8
  config.crop_size = 64
  config.num_train_steps = 800
  config.log_every_steps = 50
  config.checkpoint_every_steps = 100
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 50
  config.optimizer.end_learning_rate = 1e-5
  config.loss.trust = 'fixed'
  return config
