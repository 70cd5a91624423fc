r"""A complete tiny run (train, evaluate, checkpoint) in about a minute on a CPU.

Small widths on small synthetic camera-shake pairs made from scikit-image's
photographs (built on first use, no download). The tests use it.

  python main.py --config=configs/tiny.py --workdir=/tmp/fcn_tiny \
      --config.data_dir=/tmp/fcn_tiny_data
"""

import ml_collections

from configs import default
from fcn_jax import evaluators
from fcn_jax.models import presets


def get_config():
  config = default.get_config()
  config.model.update(presets.TINY)
  config.data_dir = '/tmp/fcn_jax_tiny_data'
  config.train_dataset = 'synthetic_blur/tiny:train'
  config.evals = ml_collections.ConfigDict(
    dict(
      tiny=evaluators.evaluator_config(
        'full_image',
        'synthetic_blur/tiny:test',
        every_steps=6,
        num_images_logged=2,
      )
    ),
    sort_keys=False,
  )
  config.best_eval = 'tiny'
  config.batch_size = 4
  config.eval_batch_size = 4
  config.crop_size = 32
  config.num_train_steps = 12
  config.log_every_steps = 4
  config.checkpoint_every_steps = 4
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = 'step'
  config.optimizer.decay_every_steps = 8
  config.loss.trust = 'learned'
  return config
