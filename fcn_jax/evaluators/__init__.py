"""Evaluators: plug-ins named by the config, run by the trainer and by --mode=eval.

`config.evals` names the evaluators of a run, each a ConfigDict with its `type`
(a name registered here), its `dataset`, its schedule (`every_steps`,
`every_steps_late`, `late_from_step`) and the options of its type;
`config.best_eval` names the one whose results pick the best checkpoint.
`from_config` builds them; each has

  name: str      its key in config.evals
  every(step)    its evaluation period at a training step (0: only at the end)
  run(params, step, out_dir=None) -> iterator of (metric, value)
                 evaluates, writes its outputs under out_dir, logs its images

`evaluate(config, workdir)` is --mode=eval: the best (or only) checkpoint of
workdir by every evaluator of the config. Old configs and command lines
(`eval_datasets`, `eval_every_steps*`, `eval_late_from_step`,
`num_eval_images_logged`, `eval.*`) are translated by `translate_legacy`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Optional

from etils import epath
import jax

from fcn_jax import checkpoint
from fcn_jax import distributed
from fcn_jax import models
from fcn_jax.errors import ConfigError
from fcn_jax.evaluators import common
from fcn_jax.evaluators.common import format_table, register
from fcn_jax.evaluators.full_image import FullImageEvaluator  # registers it
from fcn_jax.evaluators.aligned import AlignedEvaluator  # registers it

if (
  TYPE_CHECKING
):  # configs are ConfigDicts; importing this needs no ml_collections
  import ml_collections


def evaluator_config(
  kind: str, dataset: str, **options: Any
) -> ml_collections.ConfigDict:
  """A config.evals entry of type `kind`: its fields with their defaults, then `options`."""
  fields = dict(type=kind, dataset=dataset, **common.REGISTRY[kind].defaults())
  fields.update(options)
  import ml_collections  # pylint: disable=g-import-not-at-top

  return ml_collections.ConfigDict(fields)


# Old field -> the field of every config.evals entry that replaced it.
LEGACY_FIELDS = {
  'eval_every_steps': 'every_steps',
  'eval_every_steps_late': 'every_steps_late',
  'eval_late_from_step': 'late_from_step',
  'num_eval_images_logged': 'num_images_logged',
  'eval.ensemble': 'ensemble',
  'eval.save_images': 'save_images',
  'eval.center_crop': 'center_crop',
  'eval.quantize': 'quantize',
}


def translate_legacy(
  config: ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
  """`config` with its old evaluation fields moved into config.evals.

  `eval_datasets` (when set) replaces config.evals by one 'full_image'
  evaluator per dataset, named as its output folder ('a/b:c' -> 'a_b_c'),
  with the schedule and options of the config's first evaluator, the first
  picking the best checkpoint; every other old field that is set
  (see LEGACY_FIELDS) sets its new field in every evaluator. The old fields
  are cleared in the copy returned; a config without them is returned as is.
  """
  given = {
    old: value
    for old in LEGACY_FIELDS
    if (value := _get(config, old)) is not None
  }
  datasets = config.get('eval_datasets')
  if datasets is None and not given:
    return config
  config = copy.deepcopy(config)
  with config.unlocked():
    if datasets is not None:
      # Each takes the schedule and options of the config's first evaluator
      # (old configs had one schedule for all); `type` and `dataset` its own.
      template = next(iter(config.evals.values()), None)
      template = template.to_dict() if template is not None else {}
      if template.get('type', 'full_image') != 'full_image':
        template = {}
      template.pop('type', None)
      template.pop('dataset', None)
      names = [common.folder_name(spec) for spec in datasets]
      import ml_collections  # pylint: disable=g-import-not-at-top

      config.evals = ml_collections.ConfigDict(
        {
          name: evaluator_config('full_image', spec, **template)
          for name, spec in zip(names, datasets)
        },
        sort_keys=False,  # in the order of eval_datasets
      )
      config.best_eval = names[0] if names else None
      config.eval_datasets = None
    for old, value in given.items():
      for options in config.evals.values():
        options[LEGACY_FIELDS[old]] = value
      _set(config, old, None)
  return config


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  head, _, tail = dotted.partition('.')
  value = config.get(head)
  return value.get(tail) if tail and value is not None else value


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  head, _, tail = dotted.partition('.')
  if tail:
    config[head][tail] = value
  else:
    config[head] = value


def check(config: ml_collections.ConfigDict) -> None:
  """Start-up checks of config.evals and config.best_eval (translated config).

  Raises:
    ConfigError: in one line naming the field.
  """
  folders = {}
  for name, options in config.evals.items():
    if options.get('type') not in common.REGISTRY:
      raise ConfigError(
        f'config.evals.{name}.type={options.get("type")!r}: use one of '
        f'{tuple(common.REGISTRY)}'
      )
    error = common.REGISTRY[options.type].check(name, options)
    if error:
      raise ConfigError(error)
    folder = common.folder_name(options.dataset)
    if folder in folders:
      raise ConfigError(
        f'config.evals.{name} and config.evals.{folders[folder]} both '
        f'evaluate {options.dataset} (their outputs would collide)'
      )
    folders[folder] = name
  best = config.get('best_eval')
  if best is not None and best not in config.evals:
    raise ConfigError(
      f'config.best_eval={best!r}: not one of config.evals '
      f'{tuple(config.evals)}'
    )


def from_config(
  config: ml_collections.ConfigDict,
  *,
  model,
  mesh: jax.sharding.Mesh,
  data_dir: Optional[str],
  writer: Optional[Any] = None,
) -> list:
  """The evaluators of config.evals (translated), in their order there."""
  return [
    common.REGISTRY[options.type](
      name,
      options,
      model=model,
      mesh=mesh,
      data_dir=data_dir,
      batch_size=config.eval_batch_size,
      writer=writer,
    )
    for name, options in config.evals.items()
  ]


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """--mode=eval: the best (or only) checkpoint of workdir by config.evals.

  Writes `workdir/eval/<dataset>/`; prints the table; returns the summaries.
  """
  config = translate_legacy(config)
  check(config)
  if config.eval_batch_size % jax.device_count():
    raise ConfigError(
      f'config.eval_batch_size={config.eval_batch_size} is not divisible by '
      f'the {jax.device_count()} devices'
    )
  if not config.evals:
    raise ConfigError('config.evals is empty: nothing to evaluate')
  data_dir = distributed.expand_data_dir(config.data_dir)
  mesh = distributed.make_mesh()
  params, saved = checkpoint.load_params(
    workdir, sharding=distributed.replicated(mesh)
  )
  # The architecture and dtype are the checkpoint's; TLC is an evaluation option.
  model = models.model_from_config(
    saved, tlc_train_size=config.model.tlc_train_size
  )
  distributed.prepare_datasets(
    [options.dataset for options in config.evals.values()], data_dir
  )
  out_dir = epath.Path(workdir) / 'eval'
  summaries = [
    dict(evaluator.run(params, 0, out_dir))
    for evaluator in from_config(
      config, model=model, mesh=mesh, data_dir=data_dir
    )
  ]
  if jax.process_index() == 0:
    print(format_table(summaries))
  return summaries


__all__ = [
  'AlignedEvaluator',
  'FullImageEvaluator',
  'check',
  'evaluate',
  'evaluator_config',
  'format_table',
  'from_config',
  'register',
  'translate_legacy',
]
