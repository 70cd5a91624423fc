"""The project's one checkpoint format (Orbax), written by training and the converter.

A workdir holds two Orbax CheckpointManagers:
  DIR/checkpoints/<step>/   the latest state (training: every
                            `checkpoint_every_steps` and on SIGTERM; the
                            converter: step 0)
  DIR/best/<step>/          the best state by evaluation (training,
                            `config.best_rule`)
The latest `checkpoint_keep` steps are kept (`make_manager`'s `max_to_keep`),
plus every step that is a multiple of `checkpoint_keep_every` (`keep_period`),
and one best. A step is complete once Orbax renames its temporary directory
(`<step>.orbax-checkpoint-tmp`) to `<step>`: a save that fails leaves only the
temporary one, which is never restored and is cleaned up at the next start.
`restore_latest_readable` falls back to the previous step when the latest cannot
be read, moving the unreadable one aside as `<step>.unreadable` (never deleted).
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

import re
import shutil
from typing import Any, Callable, Optional
import weakref

from absl import logging
from etils import epath
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import numpy as np
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
  keep_period: int = 0,
  read_only: bool = False,
) -> ocp.CheckpointManager:
  """The CheckpointManager of `workdir/kind` (kind: 'checkpoints' or 'best').

  It keeps the latest `max_to_keep` steps (the best `max_to_keep` for 'best')
  and, with `keep_period` > 0, every step that is a multiple of it.
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=None if read_only else max_to_keep,
    keep_period=None if read_only or keep_period <= 0 else keep_period,
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
  wait(manager)  # the previous save's error names the previous step
  try:
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointSaveError(step, manager.directory, e) from e
  _pending[manager] = int(step)


# The step each manager is writing in the background (for CheckpointSaveError).
_pending: 'weakref.WeakKeyDictionary[ocp.CheckpointManager, int]' = (
  weakref.WeakKeyDictionary()
)


class CheckpointSaveError(OSError):
  """A checkpoint that could not be written (no space, permission, quota, a
  lost mount): names the step, its directory and the cause, in one line."""

  def __init__(self, step: Optional[int], directory: Any, cause: BaseException):
    self.step, self.cause = step, cause
    self.path = str(epath.Path(directory) / str(step))
    super().__init__(
      f'saving checkpoint step {step} to {self.path} failed: '
      f'{cause_line(cause)}'
    )


def wait(manager: ocp.CheckpointManager) -> None:
  """Blocks until the manager's background save is complete.

  Raises:
    CheckpointSaveError: the save failed; its partial step
      (`<step>.orbax-checkpoint-tmp`) is never restored and the previous
      complete steps stay.
  """
  try:
    manager.wait_until_finished()
    manager.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointSaveError(
      _pending.pop(manager, None), manager.directory, e
    ) from e
  _pending.pop(manager, None)


def close(manager: ocp.CheckpointManager) -> Optional[CheckpointSaveError]:
  """Waits for the background save and closes the manager's writers.

  Returns the save's error rather than raising it (for clean-up after another
  error); None when all went well.
  """
  error = None
  try:
    wait(manager)
  except CheckpointSaveError as e:
    error = e
  try:
    manager.close()
  except Exception:  # pylint: disable=broad-except
    logging.exception('closing the checkpoint manager of %s', manager.directory)
  return error


# Status codes of TensorStore / absl errors that start their useful line.
_STATUS = re.compile(
  r'\b((?:FAILED_PRECONDITION|DATA_LOSS|RESOURCE_EXHAUSTED|NOT_FOUND|'
  r'PERMISSION_DENIED|UNAVAILABLE|INVALID_ARGUMENT|OUT_OF_RANGE|INTERNAL|'
  r'UNKNOWN|ABORTED|DEADLINE_EXCEEDED|UNAUTHENTICATED): .*)'
)


def cause_line(error: BaseException, limit: int = 400) -> str:
  """The one line of `error` (or of the errors it came from) that says why.

  TensorStore errors come wrapped in Orbax's: the first line carrying a status
  code (e.g. `RESOURCE_EXHAUSTED: Error writing local file ...`) is preferred;
  else the first line of the outermost error with a message.
  """
  chain, seen = [], set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    chain.append(error)
    error = error.__cause__ or error.__context__
  for e in chain:
    match = _STATUS.search(str(e))
    if match:
      return _shorten(match.group(1), limit)
  for e in chain:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if lines:
      head = type(e).__name__
      if isinstance(e, OSError) or head in ('Exception', 'ValueError'):
        return _shorten(lines[0], limit)
      return _shorten(f'{head}: {lines[0]}', limit)
  return type(chain[0]).__name__ if chain else 'unknown error'


def _shorten(line: str, limit: int) -> str:
  return line if len(line) <= limit else line[: limit - 3] + '...'


class CheckpointUnreadableError(ValueError):
  """No step of a checkpoint directory can be read (names each and why)."""


def restore_latest_readable(
  manager: ocp.CheckpointManager, restore: Callable[[int], Any]
) -> Optional[tuple[int, Any]]:
  """(step, restore(step)) of the newest step that can be read; None if none.

  Steps are tried newest first. Once one restores, the newer ones that could
  not be read are moved aside to `<step>.unreadable` (renamed, never deleted)
  with one warning line each, so that saving goes on from the restored step.
  In a job of several processes every process tries the same step and they
  agree (all succeed, or it counts as unreadable on every one) before going on.

  Raises:
    CheckpointUnreadableError: steps exist but none can be read; one line
      naming each step tried and why. Nothing is moved or deleted.
  """
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      result, error = restore(step), None
    except Exception as e:  # pylint: disable=broad-except
      result, error = None, e
    if not _all_processes_agree(error is None):
      failed.append((step, error))
      continue
    for bad, why in failed:
      _move_aside(manager, bad, why, step)
    if failed:
      manager.reload()
    return step, result
  if failed:
    raise CheckpointUnreadableError(
      f'no checkpoint of {manager.directory} can be read: '
      + '; '.join(
        f'step {step}: '
        + (cause_line(why) if why else 'unreadable on another process')
        for step, why in failed
      )
    )
  return None


def _all_processes_agree(ok: bool) -> bool:
  """Whether `ok` holds on every process (a collective: all must call it)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _move_aside(
  manager: ocp.CheckpointManager,
  step: int,
  why: Optional[BaseException],
  restored: int,
) -> None:
  source = manager.directory / str(step)
  target = manager.directory / f'{step}.unreadable'
  n = 1
  while target.exists():
    target = manager.directory / f'{step}.unreadable.{n}'
    n += 1
  if jax.process_index() == 0:
    source.rename(target)
  multihost_utils.sync_global_devices(f'fcn_jax_unreadable_{step}')
  logging.warning(
    'Checkpoint step %d cannot be read (%s); moved it to %s and restored '
    'step %d',
    step,
    cause_line(why) if why else 'unreadable on another process',
    target,
    restored,
  )


# Orbax's metadata per array (sharding, _METADATA, array_metadatas, the OCDBT
# index: about 1 KB each, measured) and per step (config, meta, markers).
ARRAY_OVERHEAD_BYTES = 1024
STEP_OVERHEAD_BYTES = 16 * 1024


def checkpoint_bytes(tree: Any) -> int:
  """About what a step holding the arrays of `tree` (arrays or
  jax.ShapeDtypeStruct) takes on disk."""
  leaves = jax.tree.leaves(tree)
  return STEP_OVERHEAD_BYTES + sum(
    int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize + ARRAY_OVERHEAD_BYTES
    for x in leaves
  )


def check_disk(
  workdir: str,
  step_bytes: int,
  copies: int,
  *,
  keep: int,
  keep_every: int = 0,
) -> None:
  """Logs what one checkpoint costs on disk; warns when a local workdir has
  less free space than `copies` checkpoints (kept ones + the one being
  written + the best)."""
  every = f' and every {keep_every}th step' if keep_every > 0 else ''
  line = (
    f'Checkpoints: one is about {_mb(step_bytes)}; keeping the latest {keep}'
    f'{every}, and the best'
  )
  if '://' in str(workdir):
    logging.info('%s', line)
    return
  free = shutil.disk_usage(absolute(workdir)).free
  logging.info('%s; %s free in %s', line, _mb(free), workdir)
  if free < copies * step_bytes:
    logging.warning(
      'Low disk space: %s free in %s, but %d checkpoints (%d kept + the best '
      '+ one being written) of about %s need %s',
      _mb(free),
      workdir,
      copies,
      copies - 2,
      _mb(step_bytes),
      _mb(copies * step_bytes),
    )


def _mb(n: int) -> str:
  return f'{n / 1e9:.1f} GB' if n >= 1e9 else f'{n / 1e6:.1f} MB'


def read_metrics(manager: ocp.CheckpointManager) -> Optional[dict]:
  """The metrics stored with the manager's latest step (None without one)."""
  found = restore_latest_readable(
    manager,
    lambda step: manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    ),
  )
  return None if found is None else found[1]['meta'].get('metrics')


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


def read(manager: ocp.CheckpointManager, step: int, **items: Any) -> Any:
  """`manager.restore` of `items` at `step` for readers (prediction,
  evaluation, warm starts).

  Raises:
    CheckpointUnreadableError: in one line, naming the step's directory and
      the cause.
  """
  try:
    return manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # pylint: disable=broad-except
    error = CheckpointUnreadableError(
      f'checkpoint {manager.directory / str(step)} cannot be read: '
      f'{cause_line(e)}'
    )
    error.cause = e  # kept, but not printed: the line says why
  raise error from None


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
  config = read(mngr, step, config=ocp.args.JsonRestore())['config']
  target = abstract_params(model_from_config(config), sharding)
  restored = read(mngr, step, params=ocp.args.StandardRestore(target))
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
