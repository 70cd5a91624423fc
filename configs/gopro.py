r"""FCN on GoPro as in the paper (section 4.2).

Adam 2e-4 halved every 200 epochs over 600 epochs, batch 16, 256x256 crops;
evaluation on GoPro test every 50 epochs, every 15 after epoch 300; the best
model by PSNR is kept; the stages are weighted by learned trust ratios.

  python main.py --config=configs/gopro.py --workdir=runs/gopro \
      --config.data_dir=~/tensorflow_datasets
"""
from configs import default


def get_config():
  config = default.get_config()
  spe = default.steps(1, config.batch_size)           # 132 steps per epoch
  config.num_train_steps = 600 * spe
  config.optimizer.schedule = 'step'
  config.optimizer.decay_every_steps = 200 * spe
  config.eval_every_steps = 50 * spe
  config.eval_every_steps_late = 15 * spe
  config.eval_late_from_step = 300 * spe
  config.checkpoint_every_steps = 5 * spe
  config.eval_datasets = ('gopro/blur:test',)
  config.loss.trust = 'learned'
  # The 2103 training pairs decoded once (10.8 GiB of local disk, built on first
  # use), so that no PNG is decoded while training; '' to decode PNGs instead.
  config.decoded_cache_dir = '~/.cache/fcn_jax/decoded'
  return config
