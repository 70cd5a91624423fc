r"""FCN on GoPro with the authors' released recipe (train.py, training.yml).

Adam 2e-4, 3 warm-up epochs then cosine to 1e-6 over 3000 epochs, batch 16,
256x256 crops, all stages weighted 1 (no trust ratios in the release),
evaluation every 20 epochs.

  python main.py --config=configs/gopro_release.py --workdir=runs/gopro_release
"""
from configs import default


def get_config():
  config = default.get_config()
  spe = default.steps(1, config.batch_size)
  config.num_train_steps = 3000 * spe
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 3 * spe
  config.optimizer.end_learning_rate = 1e-6
  config.eval_every_steps = 20 * spe
  config.checkpoint_every_steps = 5 * spe
  config.eval_datasets = ('gopro/blur:test',)
  config.loss.trust = 'fixed'
  return config
