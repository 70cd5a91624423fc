"""Training of FCN: one sharded, jit-compiled loop.

`train_and_evaluate` reads top to bottom as named steps: resolve the config
(`resolve`: checks, data dir, mesh and shardings), restore or create the state
(`restore_or_create`), the input, then the loop: step, guard against NaN/Inf
(`NonFiniteGuard`), and the periodic actions (`itstime`): logging,
evaluations (`fcn_jax.evaluators`, the best checkpoint kept by `BestKeeper`)
and checkpoints. The state and its checkpoint layout are
`fcn_jax.train_state`. The pieces import no TensorFlow: the input pipeline
and clu's metric writers, periodic actions and parameter overview are
imported only inside `train_and_evaluate`, and the step imports no clu or
ml_collections (an accelerator image with only JAX, Flax, Optax and Orbax runs
it).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from absl import logging
from etils import epath
import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from fcn_jax import checkpoint
from fcn_jax import cpu
from fcn_jax import distributed
from fcn_jax import evaluators
from fcn_jax import interrupts
from fcn_jax import losses
from fcn_jax import memory
from fcn_jax import metrics
from fcn_jax import models
from fcn_jax import tooling
from fcn_jax import train_state
from fcn_jax.errors import ConfigError, NonFiniteLossError
from fcn_jax.models import FCN
from fcn_jax.train_state import STAGES, TrainState
from fcn_jax.models.layers import REMAT_GRANULARITIES, REMAT_POLICIES

if TYPE_CHECKING:  # configs are ConfigDicts; the step pieces need no import
  import ml_collections


# ----------------------------------------------------------------------------
# The optimizer and the step.


def create_learning_rate_fn(
  config: ml_collections.ConfigDict,
) -> optax.Schedule:
  """The learning rate at each step (config.optimizer.schedule)."""
  opt = config.optimizer
  if opt.schedule == 'constant':
    return optax.constant_schedule(opt.learning_rate)
  if opt.schedule == 'step':
    if opt.decay_every_steps <= 0:
      return optax.constant_schedule(opt.learning_rate)
    return optax.exponential_decay(
      opt.learning_rate, opt.decay_every_steps, opt.decay_factor, staircase=True
    )
  if opt.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
      0.0,
      opt.learning_rate,
      max(opt.warmup_steps, 1),
      max(config.num_train_steps, opt.warmup_steps + 1),
      opt.end_learning_rate,
    )
  raise ConfigError(
    f'config.optimizer.schedule: unknown schedule {opt.schedule!r}'
  )


def create_optimizer(
  config: ml_collections.ConfigDict,
) -> optax.GradientTransformation:
  opt = config.optimizer
  return optax.adam(
    create_learning_rate_fn(config), b1=opt.b1, b2=opt.b2, eps=opt.eps
  )


@flax.struct.dataclass
class Average:
  """The mean of the values merged so far."""

  total: jax.Array
  count: jax.Array

  @classmethod
  def of(cls, values: jax.Array) -> Average:
    return cls(jnp.sum(values), jnp.asarray(jnp.size(values), jnp.int32))

  def merge(self, other: Average) -> Average:
    return Average(self.total + other.total, self.count + other.count)

  def compute(self) -> jax.Array:
    return self.total / self.count


@flax.struct.dataclass
class LastValue:
  """The value of the last step merged."""

  value: jax.Array

  @classmethod
  def of(cls, value: jax.Array) -> LastValue:
    return cls(jnp.asarray(value))

  def merge(self, other: LastValue) -> LastValue:
    return other

  def compute(self) -> jax.Array:
    return self.value


@flax.struct.dataclass
class TrainMetrics:
  """What `train_step` reports, per stage in the order of STAGES.

  Averages over the steps merged since the last log; the trust ratios and the
  learning rate are those of the last step (clu's Average and LastValue, in
  a few lines, so that the step imports no clu).
  """

  loss: Average
  psnr: Average
  loss_final: Average
  loss_stage2: Average
  loss_stage1: Average
  trust_final: LastValue
  trust_stage2: LastValue
  trust_stage1: LastValue
  grad_norm: Average
  learning_rate: LastValue

  @classmethod
  def single_from_model_output(cls, **outputs: jax.Array) -> TrainMetrics:
    last = ('trust_final', 'trust_stage2', 'trust_stage1', 'learning_rate')
    return cls(
      **{
        k: (LastValue if k in last else Average).of(v)
        for k, v in outputs.items()
      }
    )

  def merge(self, other: TrainMetrics) -> TrainMetrics:
    return jax.tree.map(
      lambda a, b: a.merge(b),
      self,
      other,
      is_leaf=lambda x: isinstance(x, (Average, LastValue)),
    )

  def compute(self) -> dict[str, jax.Array]:
    return {
      f.name: getattr(self, f.name).compute() for f in dataclasses.fields(self)
    }


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  model: FCN,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  learning_rate_fn: optax.Schedule,
) -> tuple[TrainState, Any]:
  """One Adam step on the trust-weighted loss of the three stage images.

  The images may be float in [0, 1] or uint8 in [0, 255] (converted here).
  """
  cfg = config.loss
  batch = {k: to_unit_float(batch[k]) for k in ('blur', 'sharp')}

  def loss_fn(params):
    outputs = model.apply({'params': params['net']}, batch['blur'])
    per_stage = losses.stage_losses(
      outputs,
      batch['sharp'],
      eps=cfg.charbonnier_eps,
      edge_weight=cfg.edge_weight,
    )
    loss = losses.combine(
      per_stage, params['trust'], trust=cfg.trust, tau=cfg.trust_tau
    )
    return loss, (per_stage, outputs[0])

  (loss, (per_stage, restored)), grads = jax.value_and_grad(
    loss_fn, has_aux=True
  )(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
  )
  ratios = (
    losses.trust_ratios(state.params['trust'])
    if cfg.trust == 'learned'
    else jnp.ones(len(STAGES))
  )
  outputs = dict(
    loss=loss,
    psnr=metrics.psnr(restored, batch['sharp'], quantize=False),
    grad_norm=optax.global_norm(grads['net']),
    learning_rate=learning_rate_fn(state.step),
    **{f'loss_{s}': per_stage[i] for i, s in enumerate(STAGES)},
    **{f'trust_{s}': ratios[i] for i, s in enumerate(STAGES)},
  )
  return new_state, TrainMetrics.single_from_model_output(**outputs)


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 images in [0, 255] -> float32 in [0, 1]; float images as they are."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images


def prefetch_to_device(
  iterator, sharding: jax.sharding.Sharding, size: int = 2
):
  """Yields the host batches of `iterator` as device arrays, `size` at a time.

  Each host's part becomes one global array (`make_array_from_process_local_data`);
  the transfers are asynchronous, so they overlap the steps still running (the
  deque pattern of `flax.jax_utils.prefetch_to_device`, for `jit` shardings).
  """
  queue = collections.deque()

  def enqueue(n):
    for local in itertools.islice(iterator, n):
      queue.append(
        {
          k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()
        }
      )

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


# ----------------------------------------------------------------------------
# Start-up: checks, and what the config resolves to.


def check_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Start-up checks that would otherwise fail hours into a run.

  Raises:
    ConfigError: in one line naming the field and its value.
  """
  config = evaluators.translate_legacy(config)
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % num_devices:
      raise ConfigError(
        f'config.{field}={config[field]} is not divisible by the '
        f'{num_devices} devices'
      )
  if config.crop_size % 8 or config.crop_size <= 0:
    raise ConfigError(
      f'config.crop_size={config.crop_size} must be a positive multiple of 8'
    )
  if config.train_patch not in ('crop', 'resize'):
    raise ConfigError(
      f'config.train_patch={config.train_patch!r}: use \'crop\' or \'resize\''
    )
  evaluators.check(config)
  if config.best_rule not in BEST_RULES:
    raise ConfigError(
      f'config.best_rule={config.best_rule!r}: use one of {BEST_RULES}'
    )
  if config.checkpoint_keep < 1:
    raise ConfigError(
      f'config.checkpoint_keep={config.checkpoint_keep} must be at least 1'
    )
  if config.checkpoint_keep_every < 0:
    raise ConfigError(
      f'config.checkpoint_keep_every={config.checkpoint_keep_every} is '
      'negative (0: none kept beyond the latest)'
    )
  if config.num_train_steps < 0:
    raise ConfigError(
      f'config.num_train_steps={config.num_train_steps} is negative'
    )
  if config.loss.trust not in ('fixed', 'learned'):
    raise ConfigError(
      f"config.loss.trust={config.loss.trust!r}: use 'fixed' or 'learned'"
    )
  if not 0 < config.loss.trust_init < 1:
    raise ConfigError(
      f'config.loss.trust_init={config.loss.trust_init} must be in (0, 1)'
    )
  if jnp.dtype(config.model.dtype) not in (jnp.float32, jnp.bfloat16):
    raise ConfigError(
      f"config.model.dtype={config.model.dtype!r}: use 'float32' or 'bfloat16'"
    )
  if any(s not in (0, 1, 2, 3) for s in config.model.remat):
    raise ConfigError(
      f'config.model.remat={config.model.remat}: stages are 0, 1, 2, 3'
    )
  for field, choices in (
    ('remat_granularity', REMAT_GRANULARITIES),
    ('remat_policy', REMAT_POLICIES),
  ):
    if config.model.get(field, choices[0]) not in choices:
      raise ConfigError(
        f'config.model.{field}={config.model[field]!r}: use one of {choices}'
      )
  if config.model.precision not in (None, 'default', 'high', 'highest'):
    raise ConfigError(
      f'config.model.precision={config.model.precision!r}: use None,'
      " 'default', 'high' or 'highest'"
    )
  try:  # the ablation switches fit together
    models.model_from_config(config).kept_stages()
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from None
  if '://' in config.get('decoded_cache_dir', ''):
    raise ConfigError(
      f'config.decoded_cache_dir={config.decoded_cache_dir}: use a local '
      'folder (the cache is memory-mapped)'
    )
  create_learning_rate_fn(config)
  if config.init_from and not epath.Path(config.init_from).is_dir():
    raise ConfigError(f'config.init_from={config.init_from}: no such directory')
  try:
    memory.check_memory(config, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None


BEST_RULES = ('psnr', 'psnr_and_ssim')


def is_new_best(rule: str, summary: dict, best: Optional[dict]) -> bool:
  """Whether evaluation `summary` beats the best checkpoint's metrics `best`.

  'psnr': a higher PSNR. 'psnr_and_ssim' (the paper, section 4.2): a higher
  PSNR and a higher SSIM (MATLAB convention) than the best checkpoint's, both
  strictly. A metric missing from `best` counts as never reached.
  """
  keys = ('psnr',) if rule == 'psnr' else ('psnr', 'ssim_matlab')
  best = best or {}
  return all(summary[k] > best.get(k, -np.inf) for k in keys)


@dataclasses.dataclass(frozen=True)
class Run:
  """What a training run derives from its config, once, at start-up."""

  config: ml_collections.ConfigDict  # old evaluation fields translated
  workdir: epath.Path
  data_dir: Optional[str]  # config.data_dir expanded
  num_train_steps: int
  mesh: jax.sharding.Mesh  # one 'data' axis over every device of every host
  replicated: jax.sharding.NamedSharding  # the state, the metrics
  batch: jax.sharding.NamedSharding  # the batches, split over the devices

  @property
  def datasets(self) -> tuple[str, ...]:
    """Every dataset the run reads: training, then each evaluator's."""
    return (
      self.config.train_dataset,
      *(options.dataset for options in self.config.evals.values()),
    )


def resolve(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Checks `config` (`check_config`) and resolves what it derives."""
  config = evaluators.translate_legacy(config)
  check_config(config, jax.device_count())
  mesh = distributed.make_mesh()
  return Run(
    config=config,
    workdir=epath.Path(workdir),
    data_dir=distributed.expand_data_dir(config.data_dir),
    num_train_steps=config.num_train_steps,
    mesh=mesh,
    replicated=distributed.replicated(mesh),
    batch=distributed.batch_sharding(mesh),
  )


def flat_hparams(config: ml_collections.ConfigDict) -> dict:
  """The config's scalar fields by dotted name ('optimizer.learning_rate')."""
  return {
    k: v
    for k, v in traverse_util.flatten_dict(config.to_dict(), sep='.').items()
    if isinstance(v, (int, float, str, bool))
  }


# ----------------------------------------------------------------------------
# The state.


def restore_or_create(
  config: ml_collections.ConfigDict,
  latest: ocp.CheckpointManager,
  model: FCN,
  tx: optax.GradientTransformation,
  sharding: jax.sharding.Sharding,
) -> TrainState:
  """The state to train from, placed with `sharding`.

  The latest checkpoint of `latest` when there is one (resuming); else a
  fresh state (jit-initialised from config.seed), with the modules of
  config.init_from put in and the optimizer state initialised afresh for them.

  Raises:
    ConfigError: when config.init_from does not fit the model.
  """
  create = functools.partial(
    train_state.create_train_state, model=model, tx=tx, config=config
  )
  rng = jax.random.key(config.seed)
  abstract = jax.eval_shape(create, rng)
  # The newest readable step; unreadable newer ones are moved aside.
  found = checkpoint.restore_latest_readable(
    latest, lambda step: train_state.restore(latest, abstract, sharding, step)
  )
  if found is not None:
    state = found[1]
    logging.info(
      'Resumed from %s at step %d', latest.directory, int(state.step)
    )
    return state
  state = jax.jit(create, out_shardings=sharding)(rng)
  if config.init_from:
    try:  # the modules it shares with this model; logs loaded and new ones
      params, _, _ = checkpoint.warm_start(
        state.params['net'], config.init_from, sharding=sharding
      )
    except checkpoint.IncompatibleCheckpointError as e:
      raise ConfigError(str(e)) from None
    params = dict(state.params, net=params)
    state = state.replace(
      params=params,
      opt_state=jax.jit(tx.init, out_shardings=sharding)(params),
    )
  return state


# ----------------------------------------------------------------------------
# The loop's pieces.


def itstime(step: int, every: int, total: int) -> bool:
  """Whether a periodic action (every `every` steps; 0: never) is due after
  `step`; every action is due after the last step, `total`."""
  return step == total or (every > 0 and step % every == 0)


class NonFiniteGuard:
  """Stops training at the first NaN or Inf, before it reaches a checkpoint.

  `add` keeps each step's loss on the device (no host sync per step);
  `check` reads the losses kept since the last check and, with `params`, the
  parameters too (the last update may have made them non-finite).
  """

  def __init__(self):
    self._losses: list[tuple[int, jax.Array]] = []

  def add(self, step: int, loss: jax.Array) -> None:
    self._losses.append((step, loss))

  def check(self, step: int, params: Any = None) -> None:
    """Raises NonFiniteLossError naming the first non-finite step."""
    values = jax.device_get([loss for _, loss in self._losses])
    for (at, _), value in zip(self._losses, values):
      if not np.isfinite(value):
        raise NonFiniteLossError(
          f'the loss is {float(value)} at step {at}; training stopped, the '
          'last checkpoint saved before it is intact'
        )
    self._losses = []
    if params is not None and not _all_finite(params):
      raise NonFiniteLossError(
        f'the parameters became NaN or Inf by step {step}; training stopped, '
        'the last checkpoint saved before it is intact'
      )


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(
    jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])
  )


class BestKeeper:
  """The best checkpoint: its manager, the rule that picks it, its metrics.

  Only the results of evaluator `evaluator` (config.best_eval) compete; a new
  best is saved with its psnr, ssim_matlab and dataset as metrics.
  """

  def __init__(
    self,
    workdir: str,
    rule: str,
    evaluator: Optional[str],
    save: Callable[..., None],
  ):
    self.manager = checkpoint.make_manager(workdir, checkpoint.BEST)
    self.rule = rule
    self.evaluator = evaluator
    self.metrics = checkpoint.read_metrics(self.manager)
    self._save = save

  def consider(self, name: str, summary: dict, state: TrainState) -> bool:
    """Saves `state` as the best if evaluator `name`'s `summary` beats it."""
    if name != self.evaluator or not is_new_best(
      self.rule, summary, self.metrics
    ):
      return False
    self.metrics = {k: summary[k] for k in ('psnr', 'ssim_matlab', 'dataset')}
    self._save(self.manager, state, metrics=self.metrics)
    return True


def jit_train_step(
  config: ml_collections.ConfigDict,
  model: FCN,
  tx: optax.GradientTransformation,
  run: Run,
) -> Callable[..., tuple[TrainState, Any]]:
  """`train_step` jitted for the run's shardings, donating the old state."""
  return jax.jit(
    functools.partial(
      train_step,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=create_learning_rate_fn(config),
    ),
    in_shardings=(run.replicated, run.batch),
    out_shardings=(run.replicated, run.replicated),
    donate_argnums=(0,),
    compiler_options=cpu.compiler_options(),
  )


def run_evaluations(
  due: list,
  state: TrainState,
  step: int,
  *,
  writer: Any,
  keeper: BestKeeper,
  out_dir: Optional[epath.Path],
) -> list[dict]:
  """Runs the evaluators `due` on the state's network at `step`.

  Writes each one's `eval_<dataset>_*` scalars, offers its summary to `keeper`
  and logs the table of all; with `out_dir`, they write their files there.
  """
  summaries = []
  for evaluator in due:
    summary = dict(evaluator.run(state.params['net'], step, out_dir=out_dir))
    writer.write_scalars(
      step,
      {
        f'eval_{evaluator.folder}_{k}': v
        for k, v in summary.items()
        if isinstance(v, float)
      },
    )
    summaries.append(summary)
    keeper.consider(evaluator.name, summary, state)
  logging.info('step %d\n%s', step, evaluators.format_table(summaries))
  return summaries


def train_batches(
  config: ml_collections.ConfigDict, data_dir: Optional[str], start_step: int
) -> Iterator[dict]:
  """The host's training batches from `start_step` on (stateless, step-indexed)."""
  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  return data.train_iterator(
    config.train_dataset,
    data_dir,
    global_batch_size=config.batch_size,
    crop_size=config.crop_size,
    seed=config.seed,
    start_step=start_step,
    patch=config.train_patch,
    decoded_cache=config.get('decoded_cache_dir') or None,
    dtype='uint8',
  )


# ----------------------------------------------------------------------------
# The trainer.


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  profile_steps: Optional[str] = None,
) -> TrainState:
  """Trains (resuming from workdir if it holds a checkpoint), evaluating as configured."""
  # pylint: disable=g-import-not-at-top
  from clu import metric_writers
  from clu import parameter_overview
  from clu import periodic_actions

  # pylint: enable=g-import-not-at-top
  run = resolve(config, workdir)
  config, total = run.config, run.num_train_steps
  distributed.prepare_datasets(run.datasets, run.data_dir)
  run.workdir.mkdir(parents=True, exist_ok=True)
  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() > 0
  )

  model = models.model_from_config(config)
  tx = create_optimizer(config)
  latest = checkpoint.make_manager(
    workdir,
    checkpoint.LATEST,
    max_to_keep=config.checkpoint_keep,
    keep_period=config.checkpoint_keep_every,
  )
  state = restore_or_create(config, latest, model, tx, run.replicated)
  checkpoint.check_disk(
    workdir,
    checkpoint.checkpoint_bytes((state.params, state.opt_state)),
    config.checkpoint_keep + 2,  # the kept ones, the best, the one being saved
    keep=config.checkpoint_keep,
    keep_every=config.checkpoint_keep_every,
  )
  start_step = int(state.step)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params['net'])
    writer.write_hparams(flat_hparams(config))

  batches = prefetch_to_device(
    train_batches(config, run.data_dir, start_step), run.batch
  )
  step_fn = jit_train_step(config, model, tx, run)
  evals = evaluators.from_config(
    config, model=model, mesh=run.mesh, data_dir=run.data_dir, writer=writer
  )
  save = functools.partial(
    train_state.save, config=config.to_dict(), batch_size=config.batch_size
  )
  keeper = BestKeeper(workdir, config.best_rule, config.best_eval, save)
  guard = NonFiniteGuard()
  preemption = interrupts.StopSignals(latest)
  profiler = tooling.StepProfiler(workdir, profile_steps, start_step)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)
  hooks = [report] if jax.process_index() == 0 else []
  train_metrics = None
  logging.info('Training from step %d to %d', start_step, total)
  try:
    for step in range(start_step + 1, total + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, step_metrics = step_fn(state, next(batches))
        train_metrics = (
          step_metrics
          if train_metrics is None
          else train_metrics.merge(step_metrics)
        )
        guard.add(step, step_metrics.loss.total)
      profiler(step, state)
      for hook in hooks:
        hook(step)
      preempted = preemption(step)  # at every step: the sync point needs it
      log_now = itstime(step, config.log_every_steps, total)
      checkpoint_now = preempted or itstime(
        step, config.checkpoint_every_steps, total
      )
      due = [e for e in evals if itstime(step, e.every(step), total)]
      if log_now or checkpoint_now or due:
        guard.check(step)
      if log_now:
        writer.write_scalars(
          step, {f'train_{k}': v for k, v in train_metrics.compute().items()}
        )
        train_metrics = None
      if due:
        with report.timed('eval'):
          run_evaluations(
            due,
            state,
            step,
            writer=writer,
            keeper=keeper,
            out_dir=run.workdir / 'eval' if step == total else None,
          )
      if checkpoint_now:
        guard.check(step, state.params)
        save(latest, state)
      writer.flush()
      if preempted:
        checkpoint.wait(latest)
        logging.warning('%s: saved step %d; exiting', preemption.name, step)
        break
  except BaseException:
    # Closed without raising: the error on its way out names the cause.
    checkpoint.close(latest)
    checkpoint.close(keeper.manager)
    raise
  else:
    checkpoint.wait(latest)
    checkpoint.wait(keeper.manager)
  finally:
    preemption.close()
    profiler.close()
    writer.flush()
  return state
