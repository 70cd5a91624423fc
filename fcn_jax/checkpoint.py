"""The project's one checkpoint format (Orbax), written by training and the converter.

A workdir holds two Orbax CheckpointManagers:
  DIR/checkpoints/<step>/   the latest state (training: every
                            `checkpoint_every_steps` and on SIGTERM; the
                            converter: step 0)
  DIR/best/<step>/          the best state by evaluation (training,
                            `config.best_rule`)
Each step holds the items
  params   the FCN parameters
  config   the run's config as JSON; `config['model']` rebuilds the FCN
  meta     JSON: step, data position (training samples consumed), metrics
  train    training only: optimizer state and trust-ratio logits
           (`fcn_jax.train_state` knows its fields)
so prediction, evaluation and fine-tuning rebuild the model from DIR alone.
`warm_start` starts a different model (e.g. FCN from converted MPRNet
weights) from the modules the two share.
"""

from __future__ import annotations

from typing import Any, Optional

from absl import logging
from etils import epath
from flax import traverse_util
import jax
import orbax.checkpoint as ocp

from fcn_jax.models import FCN, model_from_config

LATEST = 'checkpoints'
BEST = 'best'

# Readers open managers read-only on purpose; Orbax warns about it every time.
logging.get_absl_logger().addFilter(
  lambda record: 'Given directory is read only' not in record.getMessage()
)


def make_manager(
  workdir: str,
  kind: str = LATEST,
  *,
  max_to_keep: int = 1,
  read_only: bool = False,
) -> ocp.CheckpointManager:
  """The CheckpointManager of `workdir/kind` (kind: 'checkpoints' or 'best')."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=None if read_only else max_to_keep,
    save_interval_steps=0 if read_only else 1,
    create=not read_only,
    read_only=read_only,
    cleanup_tmp_directories=not read_only,
    # Its own barrier names: with several processes, `best` and `checkpoints`
    # saving the same step at once must not meet at one barrier.
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      barrier_sync_key_prefix=kind
    ),
    **(
      dict(best_fn=lambda m: m['psnr'], best_mode='max') if kind == BEST else {}
    ),
  )
  return ocp.CheckpointManager(absolute(workdir) / kind, options=options)


def absolute(path: epath.PathLike) -> epath.Path:
  """`path` as an absolute epath.Path (gs:// and other URIs are already)."""
  path = epath.Path(path)
  return path if path.is_absolute() else path.absolute()


def save(
  manager: ocp.CheckpointManager,
  step: int,
  *,
  params: Any,
  config: dict,
  meta: dict,
  train: Any = None,
  metrics: Optional[dict] = None,
) -> None:
  """Saves one step (asynchronously; `manager.wait_until_finished()` to block)."""
  items = dict(
    params=ocp.args.StandardSave(params),
    config=ocp.args.JsonSave(config),
    meta=ocp.args.JsonSave(dict(meta, step=int(step))),
  )
  if train is not None:
    items['train'] = ocp.args.StandardSave(train)
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def read_metrics(manager: ocp.CheckpointManager) -> Optional[dict]:
  """The metrics stored with the manager's latest step (None without one)."""
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(
    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
  )['meta'].get('metrics')


def find(workdir: str) -> tuple[str, int]:
  """(kind, step) of the checkpoint consumers should use: the best, else the latest.

  Raises:
    FileNotFoundError: naming `workdir` when it holds no checkpoint.
  """
  for kind in (BEST, LATEST):
    if (epath.Path(workdir) / kind).is_dir():
      step = make_manager(workdir, kind, read_only=True).latest_step()
      if step is not None:
        return kind, step
  raise FileNotFoundError(
    f'no checkpoint in {workdir} (expected {workdir}/{BEST}/<step> or '
    f'{workdir}/{LATEST}/<step>, written by main.py or fcn_jax.convert)'
  )


def abstract_params(
  model: FCN, sharding: Optional[jax.sharding.Sharding] = None
):
  """Shapes, dtypes and placement of `model`'s parameters, without computing them."""
  shapes = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 16, 16, 3), 'float32'),
  )['params']
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes
  )


def load_params(
  workdir: str, sharding: Optional[jax.sharding.Sharding] = None
) -> tuple[Any, dict]:
  """(params, config) of the checkpoint that `find(workdir)` picks."""
  kind, step = find(workdir)
  mngr = make_manager(workdir, kind, read_only=True)
  config = mngr.restore(
    step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
  )['config']
  target = abstract_params(model_from_config(config), sharding)
  restored = mngr.restore(
    step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
  )
  return restored['params'], config


class IncompatibleCheckpointError(ValueError):
  """A checkpoint whose modules do not fit the model being initialised."""


def warm_start(
  params: dict, workdir: str, sharding: Optional[jax.sharding.Sharding] = None
) -> tuple[dict, list[str], list[str]]:
  """`params` with every top-level module of `workdir`'s checkpoint put in.

  The checkpoint may hold another architecture than `params` (its own config
  says which): e.g. MPRNet weights converted by `fcn_jax.convert` for an FCN,
  which shares every MPRNet module and adds `processing_block` and
  `query_key`. Modules of `params` missing from the checkpoint keep their
  (fresh) values. Logs both lists.

  Returns:
    (params, names of the modules loaded, names of the modules kept fresh).

  Raises:
    IncompatibleCheckpointError: naming a module of the checkpoint that the
      model does not have, or a parameter whose name or shape differs.
  """
  restored, _ = load_params(workdir, sharding)
  for name in restored:
    if name not in params:
      raise IncompatibleCheckpointError(
        f'init_from {workdir}: its module {name} is not in this model'
      )
  out, loaded, new = dict(params), [], []
  for name in params:
    if name not in restored:
      new.append(name)
      continue
    ours = traverse_util.flatten_dict({name: params[name]}, sep='/')
    theirs = traverse_util.flatten_dict({name: restored[name]}, sep='/')
    for path in sorted(set(ours) ^ set(theirs)):
      where = 'the checkpoint' if path in theirs else 'this model'
      raise IncompatibleCheckpointError(
        f'init_from {workdir}: parameter {path} is only in {where}'
      )
    for path, value in theirs.items():
      if tuple(value.shape) != tuple(ours[path].shape):
        raise IncompatibleCheckpointError(
          f'init_from {workdir}: parameter {path} has shape '
          f'{tuple(value.shape)} in the checkpoint, '
          f'{tuple(ours[path].shape)} in this model'
        )
    out[name] = restored[name]
    loaded.append(name)
  logging.info(
    'Initialised from %s: %d modules loaded (%s); %d new, freshly '
    'initialised (%s)',
    workdir,
    len(loaded),
    ', '.join(loaded),
    len(new),
    ', '.join(new) or 'none',
  )
  return out, loaded, new
