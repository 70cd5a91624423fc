"""The trainer's state, and its layout in a checkpoint.

A training step of a workdir (see `fcn_jax.checkpoint`) holds the state split
in two items: `params`, the FCN parameters every consumer reads, and `train`,
what only training resumes from (step, trust-ratio logits, optimizer state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from fcn_jax import checkpoint
from fcn_jax.models import FCN, init_params

if (
  TYPE_CHECKING
):  # configs are ConfigDicts; importing this needs no ml_collections
  import ml_collections

STAGES = ('final', 'stage2', 'stage1')  # the order of the model's outputs


@flax.struct.dataclass
class TrainState:
  """What the optimizer trains: the network and the trust-ratio logits."""

  step: jax.Array
  params: dict  # {'net': FCN params, 'trust': (3,) logits of r_final, r_stage2, r_stage1}
  opt_state: Any


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


def split(state: TrainState) -> tuple[Any, dict]:
  """The (params, train) items of a training state."""
  return state.params['net'], {
    'step': state.step,
    'trust': state.params['trust'],
    'opt_state': state.opt_state,
  }


def save(
  manager: ocp.CheckpointManager,
  state: TrainState,
  *,
  config: dict,
  batch_size: int,
  metrics: Optional[dict] = None,
) -> None:
  """Saves a training state at its step, with the data position and metrics."""
  step = int(state.step)
  params, train = split(state)
  meta = {
    'samples_seen': step * batch_size,
    **({'metrics': metrics} if metrics else {}),
  }
  checkpoint.save(
    manager,
    step,
    params=params,
    train=train,
    config=config,
    meta=meta,
    metrics=metrics,
  )


def restore(
  manager: ocp.CheckpointManager,
  abstract: TrainState,
  sharding: jax.sharding.Sharding,
  step: Optional[int] = None,
) -> TrainState:
  """The training state saved at `step` (default: the latest), placed with
  `sharding`; `abstract` (e.g. from `jax.eval_shape`) gives its structure."""
  step = manager.latest_step() if step is None else step
  target = jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
    abstract,
  )
  params, train = split(target)
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      params=ocp.args.StandardRestore(params),
      train=ocp.args.StandardRestore(train),
    ),
  )
  train = restored['train']
  return abstract.replace(
    step=train['step'],
    opt_state=train['opt_state'],
    params={'net': restored['params'], 'trust': train['trust']},
  )
