r"""The out-of-the-box demo: FCN learns to remove synthetic camera shake on a CPU.

Prepares the synthetic camera-shake dataset from the photographs bundled with
scikit-image (no download), trains a reduced-width FCN, evaluates on the
held-out photos and writes the summary and an image grid
(blurry | restored | sharp) under the workdir.

  python main.py --config=configs/demo.py --workdir=runs/demo     # or: make demo
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.update(n_feat=24, scale_unetfeats=12, scale_orsnetfeats=8, num_cab=2)
  config.data_dir = 'runs/data'
  config.train_dataset = 'synthetic_blur/skimage:train'
  config.eval_datasets = ('synthetic_blur/skimage:test',)
  config.batch_size = 8
  config.eval_batch_size = 8
  config.crop_size = 64
  config.num_train_steps = 1500
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 250
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 50
  config.optimizer.end_learning_rate = 1e-5
  config.loss.trust = 'fixed'
  config.num_eval_images_logged = 6   # also the grid in runs/demo/eval/
  return config
