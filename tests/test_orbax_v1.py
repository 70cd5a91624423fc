"""The project's checkpoints load with Orbax's newer API (orbax.checkpoint v1).

orbax-checkpoint 0.12.8 ships it as `orbax.checkpoint.experimental.v1`
(`load`, `load_checkpointables`); later releases are to make it
`orbax.checkpoint.v1`. A step written by `fcn_jax.checkpoint.save` (as
training and the converter write it) must read back through it unchanged:
parameters, the training state (optimizer state, trust logits, step),
config and meta.
"""

import importlib

import jax
import numpy as np
import pytest

from configs import tiny
from fcn_jax import checkpoint
from fcn_jax import models
from fcn_jax import train_state

STEP = 5


def orbax_v1():
  for name in ('orbax.checkpoint.v1', 'orbax.checkpoint.experimental.v1'):
    try:
      return importlib.import_module(name)
    except ImportError:
      pass
  raise AssertionError('this orbax-checkpoint has no v1 API')


@pytest.fixture(scope='module')
def saved(tmp_path_factory, tiny_train_state):
  config = tiny.get_config()
  model = models.model_from_config(config)
  state = tiny_train_state.replace(step=tiny_train_state.step + STEP)
  params, train_items = train_state.split(state)
  d = str(tmp_path_factory.mktemp('workdir'))
  mngr = checkpoint.make_manager(d)
  checkpoint.save(
    mngr,
    STEP,
    params=params,
    train=train_items,
    config=config.to_dict(),
    meta={'samples_seen': 20},
  )
  mngr.wait_until_finished()
  mngr.close()
  return d, config, model, params, train_items


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.shape(x) == np.shape(y)
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.filterwarnings('ignore:Sharding info not provided')
def test_v1_loads_a_training_checkpoint(saved):
  workdir, _, model, params, train_items = saved
  ocp1 = orbax_v1()
  kind, step = checkpoint.find(workdir)
  path = f'{workdir}/{kind}/{step}'
  assert ocp1.is_orbax_checkpoint(path)

  everything = ocp1.load_checkpointables(path)
  assert sorted(everything) == ['config', 'meta', 'params', 'train']
  assert everything['config'] == checkpoint.load_params(workdir)[1]  # JSON
  assert everything['meta'] == {'samples_seen': 20, 'step': STEP}
  assert_trees_equal(everything['params'], params)
  np.testing.assert_array_equal(
    everything['train']['trust'], train_items['trust']
  )
  assert int(everything['train']['step']) == STEP

  # With abstract trees: the project's own types come back (optax namedtuples).
  restored = ocp1.load(
    path, checkpoint.abstract_params(model), checkpointable_name='params'
  )
  assert_trees_equal(restored, params)
  abstract_train = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), train_items
  )
  restored_train = ocp1.load(path, abstract_train, checkpointable_name='train')
  assert_trees_equal(restored_train, train_items)
  assert type(restored_train['opt_state']) is type(train_items['opt_state'])
