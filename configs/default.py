"""Fields every config has, with the paper's values; other configs start here.

Training needs a config that sets the schedule (configs/gopro.py,
gopro_release.py, demo.py, tiny.py). Evaluation of a trained workdir on GoPro
and HIDE (the network is the checkpoint's):

  python main.py --config=configs/default.py --workdir=runs/gopro --mode=eval
"""

import ml_collections
from ml_collections import config_dict

from fcn_jax import evaluators
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
      # 'bfloat16': the fast path on GPU/TPU, bf16 activations with float32
      # parameters, stage images, losses and optimizer.
      dtype='float32',
      # Convolution precision. None (default): the backend's, i.e. TF32 on
      # Ampere/Hopper and one bf16 pass on TPU for float32 data; 'high';
      # 'highest': true float32 (parity with PyTorch).
      precision=config_dict.placeholder(str),
      remat=(),  # stages (0..3) to rematerialise, e.g. (0, 1, 2, 3)
      # One rematerialised unit: 'stage', 'level' (U-Net level, ORB) or
      # 'block' (each CAB); what it keeps: 'nothing_saveable',
      # 'conv_saveable' or 'dots_saveable' (fcn_jax/models/layers.py).
      remat_granularity='stage',
      remat_policy='nothing_saveable',
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
  config.batch_size = 16  # global, over all devices and hosts
  config.eval_batch_size = 8  # global
  # Start-up memory check (fcn_jax/memory.py): the compiled train step at
  # batch_size and the forward pass at eval_batch_size on eval_image_size
  # images must fit one device's memory (its bytes_limit; on CPU only with
  # device_memory_bytes or $FCN_JAX_DEVICE_MEMORY set).
  config.check_memory = True
  config.device_memory_bytes = config_dict.placeholder(int)
  config.eval_image_size = (720, 1280)
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
  config.checkpoint_every_steps = 1000
  # Checkpoints kept in workdir/checkpoints: the latest checkpoint_keep, plus
  # every step that is a multiple of checkpoint_keep_every (0: none).
  config.checkpoint_keep = 2
  config.checkpoint_keep_every = 0

  # Evaluators by name (fcn_jax/evaluators/): each has its type, dataset,
  # schedule (every_steps, 0: only at the end; every_steps_late from
  # late_from_step on) and options; e.g. --config.evals.gopro.ensemble=True.
  # They run in their order here; results go to workdir/eval/<dataset>/ and
  # the eval_<dataset>_* scalars.
  config.evals = ml_collections.ConfigDict(
    dict(
      gopro=evaluators.evaluator_config('full_image', 'gopro/blur:test'),
      hide=evaluators.evaluator_config('full_image', 'hide:test'),
    ),
    sort_keys=False,  # run in this order
  )
  # The evaluator whose results pick the best checkpoint, by best_rule:
  # 'psnr' (higher PSNR, as the release) or 'psnr_and_ssim' (both PSNR and
  # MATLAB-convention SSIM above the best's, the paper's section 4.2).
  config.best_eval = 'gopro'
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

  # The fields config.evals replaced, kept so that old configs and command
  # lines (--config.eval_datasets=..., --config.eval.center_crop=256) still
  # run: when set, evaluators.translate_legacy moves them into config.evals
  # (eval_datasets: one evaluator per dataset, the first picks the best; the
  # others: that field of every evaluator).
  config.eval_datasets = config_dict.placeholder(tuple)
  for field in (
    'eval_every_steps',
    'eval_every_steps_late',
    'eval_late_from_step',
    'num_eval_images_logged',
  ):
    config[field] = config_dict.placeholder(int)
  config.eval = ml_collections.ConfigDict(
    dict(
      ensemble=config_dict.placeholder(bool),
      save_images=config_dict.placeholder(bool),
      center_crop=config_dict.placeholder(int),
      quantize=config_dict.placeholder(bool),
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
