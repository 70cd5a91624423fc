"""Fields every config has, with the paper's values; other configs start here.

Not a run by itself: use configs/gopro.py, gopro_release.py, demo.py or tiny.py.
"""

import ml_collections
from ml_collections import config_dict

from fcn_jax.models import presets


def get_config() -> ml_collections.ConfigDict:
  """The base config."""
  config = ml_collections.ConfigDict()

  # The FCN hyper-parameters (fcn_jax.models.FCN fields). presets.FULL, the
  # published model: n_feat, scale_unetfeats, scale_orsnetfeats, num_cab,
  # kernel_size, reduction.
  config.model = ml_collections.ConfigDict(
    dict(
      **presets.FULL,
      dtype='float32',  # 'bfloat16': mixed precision (fp32 params/optimizer)
      precision=config_dict.placeholder(str),  # None, 'high' or 'highest'
      remat=(),  # stages (0..3) to rematerialise, e.g. (1, 2, 3)
      tlc_train_size=config_dict.placeholder(int),  # test-time local statistics
      # Table 2's ablation switches (models/fcn.py; configs/ablation.py):
      # processing block, enhanced feature extraction (needs use_pb),
      # multi-stage attention, raw information mechanism, stages kept (1-4).
      use_pb=True,
      use_efem=True,
      use_msam=True,
      use_rim=True,
      stages=4,
    )
  )

  # Data: TFDS names (`name[/config]:split`) prepared in data_dir.
  config.data_dir = '~/tensorflow_datasets'
  config.train_dataset = 'gopro/blur:train'
  config.eval_datasets = ('gopro/blur:test', 'hide:test')
  config.batch_size = 16  # global, over all devices and hosts
  config.eval_batch_size = 8  # global
  config.crop_size = 256
  # Training patches: 'crop' (random crop_size crops, the release) or 'resize'
  # (whole images resized to crop_size x crop_size, the paper's text).
  config.train_patch = 'crop'
  # A local folder for the decoded training pairs (raw uint8, memory-mapped,
  # built on first use; 5.5 MB per 720x1280 pair), read instead of decoding two
  # PNGs per sample; '' decodes the PNGs. The batches are the same either way.
  config.decoded_cache_dir = ''

  # Schedule, in steps.
  config.num_train_steps = 0  # set by each config
  config.log_every_steps = 100
  config.eval_every_steps = 0  # 0: evaluate only at the end
  # A second, denser evaluation period from a step on (the paper: every 15
  # epochs after epoch 300); 0 disables it.
  config.eval_every_steps_late = 0
  config.eval_late_from_step = 0
  config.checkpoint_every_steps = 1000
  config.num_eval_images_logged = 3  # blurry | restored | sharp triplets
  # When an evaluation (of eval_datasets[0]) becomes the new best checkpoint:
  # 'psnr' (higher PSNR, as the release) or 'psnr_and_ssim' (both PSNR and
  # MATLAB-convention SSIM above the best's, the paper's section 4.2).
  config.best_rule = 'psnr'

  config.seed = 1234
  # Another workdir (or converted official weights) to start from.
  config.init_from = config_dict.placeholder(str)

  config.loss = ml_collections.ConfigDict(
    dict(
      charbonnier_eps=1e-3,
      edge_weight=0.05,
      trust='learned',  # 'learned' (the paper's Eq. 1) or 'fixed' (release)
      trust_tau=0.02,  # learned: optimum r_s = min(1, tau / L_s)
      trust_init=0.5,  # learned: r_s at step 0
    )
  )

  config.optimizer = ml_collections.ConfigDict(
    dict(
      learning_rate=2e-4,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      schedule='step',  # 'step', 'warmup_cosine' or 'constant'
      decay_every_steps=0,  # step: multiply by decay_factor every N steps
      decay_factor=0.5,
      warmup_steps=0,  # warmup_cosine: linear warm-up, then cosine
      end_learning_rate=1e-6,  # warmup_cosine: final value
    )
  )

  # Evaluation options (also for --mode=eval).
  config.eval = ml_collections.ConfigDict(
    dict(
      ensemble=False,  # x8 geometric self-ensemble
      save_images=False,  # write restored PNGs under workdir/eval/
      # The release's validation: the central crop x crop window of each image
      # (None: whole images) and PSNR/SSIM of the float output (False) rather
      # than of its 8-bit levels (True).
      center_crop=config_dict.placeholder(int),
      quantize=True,
    )
  )
  return config


def steps(epochs: float, batch_size: int, examples: int) -> int:
  """Steps in `epochs` passes over `examples` (the release keeps the last partial batch)."""
  return int(round(epochs * -(-examples // batch_size)))


def gopro_steps_per_epoch(batch_size: int) -> int:
  """Steps in one pass over GoPro's train split, of its published size.

  The size is a fact of the dataset, kept next to its builder
  (`gopro_dataset_builder.TRAIN_EXAMPLES`), rather than read at start-up from
  the prepared copy's `builder.info.splits`: so a config's schedule is known
  when it loads, with or without the data, the same on every machine, and a
  partial or sliced copy does not change it. Imports the builder (and with it
  TensorFlow), so only the GoPro configs call it.
  """
  # pylint: disable-next=g-import-not-at-top
  from tfds_gopro.gopro import gopro_dataset_builder

  return steps(1, batch_size, gopro_dataset_builder.TRAIN_EXAMPLES)
