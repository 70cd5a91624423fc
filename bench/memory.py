r"""Memory of the compiled train step: pick batch size and remat before renting.

Compiles `fcn_jax.train.train_step` (the trainer's own model, optimizer and
state, built abstractly with `jax.eval_shape`: no parameters are allocated)
for one device of the current backend and prints what XLA plans for it
(`jit(...).lower(...).compile().memory_analysis()`), for float32 and bfloat16
compute, each without and with rematerialisation:

  python bench/memory.py --config=configs/gopro.py --batch_sizes=1,4
  python bench/memory.py --config=configs/gopro.py --config.crop_size=384 \
      --remat=0,1,2,3 --variants=bf16_remat

The batch is per device: with data parallelism each device holds all the
parameters and optimizer state and its share of the global batch, so a run of
global batch B on D devices needs the figure of batch B / D on each. Columns:
arguments (state + batch), outputs (new state + metrics), temporaries
(activations kept for the backward pass, gradients, workspace), and total =
arguments + outputs + temporaries - aliased (the donated state's buffers are
reused for the new state), the step's peak if everything is live at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from fcn_jax import memory
from fcn_jax import models
from fcn_jax import train

VARIANTS = {  # name: (compute dtype, rematerialise)
  'fp32': ('float32', False),
  'fp32_remat': ('float32', True),
  'bf16': ('bfloat16', False),
  'bf16_remat': ('bfloat16', True),
}

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  'configs/gopro.py',
  'Training config (its model, optimizer,'
  ' crop_size); override fields with --config.<field>=...',
)
_BATCH_SIZES = flags.DEFINE_list(
  'batch_sizes',
  None,
  'Per-device batch sizes (default: the config\'s batch_size).',
)
_VARIANTS = flags.DEFINE_list(
  'variants', list(VARIANTS), f'Any of {", ".join(VARIANTS)}.'
)
_GRANULARITY = flags.DEFINE_enum(
  'remat_granularity', 'stage', ['stage', 'level', 'block'], 'Remat unit.'
)
_POLICY = flags.DEFINE_enum(
  'remat_policy',
  'nothing_saveable',
  ['nothing_saveable', 'conv_saveable', 'dots_saveable'],
  'What a remat unit keeps.',
)
_REMAT = flags.DEFINE_list(
  'remat',
  ['1', '2', '3'],
  'Stages (0..3) that the remat variants rematerialise.',
)


def step_memory(config, batch_size: int) -> dict[str, int]:
  """Bytes of the compiled train step of `config` at `batch_size`."""
  return memory.train_step_memory(config, batch_size)


def residual_bytes(config) -> int:
  """Saved-residual bytes of one crop_size image (backend-independent)."""
  model = models.model_from_config(config)
  state = memory._abstract_state(config)[2]
  crop = config.crop_size
  return memory.saved_residual_bytes(
    model, state.params['net'], (1, crop, crop, 3)
  )


def _mib(n: int) -> str:
  return f'{n / 2**20:,.1f}'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  unknown = [v for v in _VARIANTS.value if v not in VARIANTS]
  if unknown:
    raise app.UsageError(
      f'--variants: unknown {unknown}; use any of {list(VARIANTS)}'
    )
  remat = tuple(int(s) for s in _REMAT.value)
  batch_sizes = [int(b) for b in _BATCH_SIZES.value or [config.batch_size]]
  train.check_config(config, 1)
  device = jax.devices()[0]
  print(
    f'{jax.default_backend()} ({device.device_kind}), jax'
    f' {jax.__version__}; crop {config.crop_size}, model'
    f' n_feat={config.model.n_feat}; remat stages {remat}; MiB per device'
  )
  print(
    '| variant | batch | crop | arguments MiB | outputs MiB |'
    ' temporaries MiB | total MiB | XLA peak MiB | saved residuals MiB/image |'
  )
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for batch_size in batch_sizes:
    for name in _VARIANTS.value:
      dtype, rematerialise = VARIANTS[name]
      variant = config.copy_and_resolve_references()
      variant.model.dtype = dtype
      variant.model.remat = remat if rematerialise else ()
      variant.model.remat_granularity = _GRANULARITY.value
      variant.model.remat_policy = _POLICY.value
      sizes = step_memory(variant, batch_size)
      print(
        f'| {name} | {batch_size} | {config.crop_size} | '
        + ' | '.join(
          _mib(sizes[k])
          for k in ('arguments', 'outputs', 'temporaries', 'total', 'peak')
        )
        + f' | {_mib(residual_bytes(variant))} |',
        flush=True,
      )


if __name__ == '__main__':
  app.run(main)
