"""Training and evaluation of FCN: one sharded, jit-compiled loop.

`train_and_evaluate` reads top to bottom: checks, mesh, model and optimizer,
state (jit-initialised with out_shardings, or restored), input, the loop
(update, logging, checkpoints, evaluations). The step functions above it are
small and testable and import no TensorFlow, clu or ml_collections (an
accelerator image with only JAX, Flax, Optax and Orbax runs them): the input
pipeline and clu's metric writers, periodic actions and parameter overview are
imported only inside `train_and_evaluate` / `evaluate`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import signal
from typing import TYPE_CHECKING, Any, Optional, Sequence

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
from fcn_jax import evaluation
from fcn_jax import losses
from fcn_jax import metrics
from fcn_jax import tooling
from fcn_jax.models import FCN, compiler_options, init_params

if TYPE_CHECKING:  # configs are ConfigDicts; the step pieces need no import
  import ml_collections

STAGES = ('final', 'stage2', 'stage1')  # the order of the model's outputs


class ConfigError(ValueError):
  """A config that cannot run, found at start-up."""


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


@flax.struct.dataclass
class TrainState:
  """What the optimizer trains: the network and the trust-ratio logits."""

  step: jax.Array
  params: dict  # {'net': FCN params, 'trust': (3,) logits of r_final, r_stage2, r_stage1}
  opt_state: Any


# ----------------------------------------------------------------------------
# Pieces.


def create_model(config: ml_collections.ConfigDict, **overrides) -> FCN:
  return checkpoint.model_from_config(config.to_dict(), **overrides)


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


def initial_trust_logits(config: ml_collections.ConfigDict) -> jax.Array:
  r0 = config.loss.trust_init
  return jnp.full((len(STAGES),), np.log(r0 / (1 - r0)), jnp.float32)


def create_train_state(
  rng: jax.Array,
  model: FCN,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
) -> TrainState:
  params = {
    'net': init_params(model, rng),
    'trust': initial_trust_logits(config),
  }
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params)
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


def _check_divisible(
  config: ml_collections.ConfigDict, field: str, num_devices: int
) -> None:
  if config[field] % num_devices:
    raise ConfigError(
      f'config.{field}={config[field]} is not divisible by the '
      f'{num_devices} devices'
    )


def check_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Start-up checks that would otherwise fail hours into a run."""
  for field in ('batch_size', 'eval_batch_size'):
    _check_divisible(config, field, num_devices)
  if config.crop_size % 8 or config.crop_size <= 0:
    raise ConfigError(
      f'config.crop_size={config.crop_size} must be a positive multiple of 8'
    )
  if config.train_patch not in ('crop', 'resize'):
    raise ConfigError(
      f'config.train_patch={config.train_patch!r}: use \'crop\' or \'resize\''
    )
  if config.eval.center_crop is not None and config.eval.center_crop <= 0:
    raise ConfigError(
      f'config.eval.center_crop={config.eval.center_crop} must be positive'
    )
  if config.best_rule not in BEST_RULES:
    raise ConfigError(
      f'config.best_rule={config.best_rule!r}: use one of {BEST_RULES}'
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
  try:
    create_model(config).kept_stages()  # the ablation switches fit together
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


def is_eval_step(config: ml_collections.ConfigDict, step: int) -> bool:
  """Whether to evaluate after `step` (the paper's two evaluation periods)."""
  if step == config.num_train_steps:
    return True
  every = config.eval_every_steps
  if config.eval_every_steps_late > 0 and step > config.eval_late_from_step:
    every = config.eval_every_steps_late
  return every > 0 and step % every == 0


def _data_dir(config) -> Optional[str]:
  return (
    str(epath.Path(config.data_dir).expanduser()) if config.data_dir else None
  )


def make_mesh() -> jax.sharding.Mesh:
  """One 'data' axis over every device of every host (GSPMD-partitioned)."""
  return jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
  )


def _abstract_state(config, model, tx, rng) -> TrainState:
  return jax.eval_shape(lambda r: create_train_state(r, model, tx, config), rng)


DATASET_BARRIER_TIMEOUT_S = 3600
_barriers = itertools.count()  # a new barrier name per call


def prepare_datasets(config, specs: Sequence[str]) -> None:
  """Checks the datasets `specs`; builds synthetic ones (no download needed) when missing.

  Process 0 builds; the others wait for it at a barrier of the coordination
  service (a process that dies meanwhile ends the job), then all check.
  """
  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  for spec in specs if jax.process_index() == 0 else ():
    name, _ = data.parse_dataset(spec)
    if name.split('/')[0] == 'synthetic_blur':
      data.prepare_synthetic(spec, _data_dir(config))
  ocp.multihost.get_barrier_sync_fn()(
    key=f'fcn_jax_datasets_{next(_barriers)}',
    timeout_ms=DATASET_BARRIER_TIMEOUT_S * 1000,
  )
  for spec in specs:
    try:
      data.check_dataset(spec, _data_dir(config))
    except ValueError as e:
      raise ConfigError(str(e)) from None


class _Preemption:
  """Whether to save and stop at a step because of SIGTERM.

  In a job of several processes, JAX's preemption notifier (installed by
  `jax.distributed.initialize`) catches SIGTERM on whichever process gets it
  and the preemption sync point picks one step at which every process returns
  True; a Python SIGTERM handler would displace that notifier, so none is
  installed. A single process has no notifier: a Python handler sets a flag.
  Call `__call__` at every step on every process.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager = manager
    self._flag: list[bool] = []
    self._previous = None
    if not jax.distributed.is_initialized():
      self._previous = signal.signal(
        signal.SIGTERM, lambda *_: self._flag.append(True)
      )

  def __call__(self, step: int) -> bool:
    return self._manager.reached_preemption(step) or bool(self._flag)

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


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
  from fcn_jax import data

  # pylint: enable=g-import-not-at-top
  check_config(config, jax.device_count())
  prepare_datasets(config, (config.train_dataset, *config.eval_datasets))
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() > 0
  )

  # Mesh: one data axis over every device of every host; parameters replicated.
  mesh = make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  data_sharding = jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec('data')
  )

  # Model, optimizer, state.
  model = create_model(config)
  tx = create_optimizer(config)
  learning_rate_fn = create_learning_rate_fn(config)
  rng = jax.random.key(config.seed)
  abstract = _abstract_state(config, model, tx, rng)
  state_sharding = jax.tree.map(lambda _: replicated, abstract)
  latest = checkpoint.make_manager(workdir, checkpoint.LATEST)
  best = checkpoint.make_manager(workdir, checkpoint.BEST)
  config_json = config.to_dict()
  if latest.latest_step() is not None:
    state = checkpoint.restore_train_state(latest, abstract, replicated)
    logging.info(
      'Resumed from %s at step %d', latest.directory, int(state.step)
    )
  else:
    state = jax.jit(
      lambda r: create_train_state(r, model, tx, config),
      out_shardings=state_sharding,
    )(rng)
    if config.init_from:
      try:  # the modules it shares with this model; logs loaded and new ones
        params, _, _ = checkpoint.warm_start(
          state.params['net'], config.init_from, sharding=replicated
        )
      except checkpoint.IncompatibleCheckpointError as e:
        raise ConfigError(str(e)) from None
      state = state.replace(params=dict(state.params, net=params))
      state = state.replace(
        opt_state=jax.jit(tx.init, out_shardings=state_sharding.opt_state)(
          state.params
        )
      )
  start_step = int(state.step)
  best_metrics = checkpoint.best_metrics(best)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params['net'])
    writer.write_hparams(
      {
        k: v
        for k, v in traverse_util.flatten_dict(config_json, sep='.').items()
        if isinstance(v, (int, float, str, bool))
      }
    )

  # Input: the stateless, step-indexed stream starts at this run's step.
  train_iter = data.train_iterator(
    config.train_dataset,
    _data_dir(config),
    global_batch_size=config.batch_size,
    crop_size=config.crop_size,
    seed=config.seed,
    start_step=start_step,
    patch=config.train_patch,
    decoded_cache=config.get('decoded_cache_dir') or None,
    dtype='uint8',
  )
  device_batches = prefetch_to_device(train_iter, data_sharding)

  step_fn = jax.jit(
    functools.partial(
      train_step,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=learning_rate_fn,
    ),
    in_shardings=(state_sharding, data_sharding),
    out_shardings=(state_sharding, replicated),
    donate_argnums=(0,),
    compiler_options=compiler_options(),
  )
  eval_step = evaluation.make_eval_step(
    model, mesh, ensemble=config.eval.ensemble, quantize=config.eval.quantize
  )

  save = functools.partial(
    checkpoint.save_train_state,
    config=config_json,
    batch_size=config.batch_size,
  )

  preemption = _Preemption(latest)
  profiler = tooling.StepProfiler(workdir, profile_steps, start_step)
  report = periodic_actions.ReportProgress(
    num_train_steps=config.num_train_steps, writer=writer
  )
  hooks = [report] if jax.process_index() == 0 else []
  train_metrics, step_losses = None, []
  logging.info(
    'Training from step %d to %d', start_step, config.num_train_steps
  )
  try:
    for step in range(start_step + 1, config.num_train_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, update = step_fn(state, next(device_batches))
        train_metrics = (
          update if train_metrics is None else train_metrics.merge(update)
        )
        step_losses.append((step, update.loss.total))
      profiler(step, state)
      for hook in hooks:
        hook(step)
      preempted = preemption(step)  # at every step: the sync point needs it
      log_now = (
        step % config.log_every_steps == 0 or step == config.num_train_steps
      )
      checkpoint_now = (
        step % config.checkpoint_every_steps == 0
        or preempted
        or step == config.num_train_steps
      )
      eval_now = is_eval_step(config, step) and config.eval_datasets
      if log_now or checkpoint_now or eval_now:
        _check_finite(step_losses)
        step_losses = []
      if log_now:
        writer.write_scalars(
          step, {f'train_{k}': v for k, v in train_metrics.compute().items()}
        )
        train_metrics = None
      if eval_now:
        with report.timed('eval'):
          summaries = evaluation.evaluate_all(
            config,
            state.params['net'],
            model,
            mesh,
            eval_step,
            data_dir=_data_dir(config),
            writer=writer,
            step=step,
            out_dir=(
              epath.Path(workdir) / 'eval'
              if step == config.num_train_steps
              else None
            ),
          )
          logging.info('step %d\n%s', step, evaluation.format_table(summaries))
          if is_new_best(config.best_rule, summaries[0], best_metrics):
            best_metrics = {
              k: summaries[0][k] for k in ('psnr', 'ssim_matlab', 'dataset')
            }
            save(best, state, metrics=best_metrics)
      if checkpoint_now:
        if not _all_finite(state.params):
          raise NonFiniteLossError(
            f'the parameters became NaN or Inf by step {step}; training stopped, '
            'the last checkpoint saved before it is intact'
          )
        save(latest, state)
      writer.flush()
      if preempted:
        logging.warning('SIGTERM: saved step %d; exiting', step)
        break
  finally:
    latest.wait_until_finished()
    best.wait_until_finished()
    preemption.close()
    profiler.close()
    writer.flush()
  return state


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(
    jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])
  )


def _check_finite(step_losses: list) -> None:
  if not step_losses:
    return
  values = jax.device_get([loss for _, loss in step_losses])
  for (step, _), value in zip(step_losses, values):
    if not np.isfinite(value):
      raise NonFiniteLossError(
        f'the loss is {float(value)} at step {step}; training stopped, the last '
        'checkpoint saved before it is intact'
      )


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """--mode=eval: the best (or only) checkpoint of workdir on config.eval_datasets."""
  _check_divisible(config, 'eval_batch_size', jax.device_count())
  if not config.eval_datasets:
    raise ConfigError('config.eval_datasets is empty: nothing to evaluate')
  mesh = make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params, saved = checkpoint.load_params(workdir, sharding=replicated)
  # The architecture and dtype are the checkpoint's; TLC is an evaluation option.
  model = checkpoint.model_from_config(
    saved, tlc_train_size=config.model.tlc_train_size
  )
  prepare_datasets(config, config.eval_datasets)
  step_fn = evaluation.make_eval_step(
    model, mesh, ensemble=config.eval.ensemble, quantize=config.eval.quantize
  )
  summaries = evaluation.evaluate_all(
    config,
    params,
    model,
    mesh,
    step_fn,
    data_dir=_data_dir(config),
    out_dir=epath.Path(workdir) / 'eval',
    save_images=config.eval.save_images,
  )
  if jax.process_index() == 0:
    print(evaluation.format_table(summaries))
  return summaries
