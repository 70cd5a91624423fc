"""--config.init_from with a converted MPRNet checkpoint: FCN starts from the
modules the two share, the FCN-only ones freshly initialised."""

import functools
import logging

import jax
import numpy as np
import pytest

from configs import tiny
from fcn_jax import checkpoint
from fcn_jax import distributed
from fcn_jax import models
from fcn_jax import train
from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY

MPRNET = dict(TINY, use_pb=False, use_efem=False)
FCN_ONLY = ['processing_block', 'query_key']


def _init(model, seed):
  return jax.jit(functools.partial(init_params, model))(jax.random.key(seed))


def _save(workdir, model_fields, params):
  """A checkpoint as fcn_jax.convert writes it."""
  mngr = checkpoint.make_manager(str(workdir))
  checkpoint.save(
    mngr,
    0,
    params=params,
    meta={},
    config={'model': dict(model_fields, dtype='float32')},
  )
  mngr.wait_until_finished()
  mngr.close()
  return str(workdir)


@pytest.fixture(scope='module')
def mprnet_run(tmp_path_factory):
  params = _init(FCN(**MPRNET), 7)
  return _save(tmp_path_factory.mktemp('mprnet'), MPRNET, params), params


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_fcn_from_mprnet_through_the_trainer(
  mprnet_run, tmp_path, monkeypatch, caplog
):
  source, mprnet = mprnet_run
  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(distributed, 'prepare_datasets', lambda *a: None)
  monkeypatch.setattr(data, 'train_iterator', lambda *a, **k: iter(()))
  config = tiny.get_config()
  config.update(init_from=source, num_train_steps=0, eval_datasets=())
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(config, str(tmp_path / 'fcn'))
  net = state.params['net']
  fresh = _init(models.model_from_config(config), config.seed)
  assert sorted(set(net) - set(mprnet)) == FCN_ONLY
  for name in net:  # shared modules: MPRNet's; FCN-only ones: as initialised
    _assert_equal(net[name], mprnet[name] if name in mprnet else fresh[name])
  assert not np.array_equal(
    net['shallow_feat1']['conv']['kernel'],
    fresh['shallow_feat1']['conv']['kernel'],
  )
  line = next(
    r.getMessage()
    for r in caplog.records
    if r.getMessage().startswith('Initialised from')
  )
  loaded, new = line.split('; ')
  assert f'{len(mprnet)} modules loaded' in loaded
  assert all(name in loaded for name in mprnet) and 'raw_information' in loaded
  assert new.endswith(
    '2 new, freshly initialised (processing_block, query_key)'
  )


@pytest.mark.parametrize(
  'source,target,match',
  [
    (dict(TINY), MPRNET, 'its module processing_block is not in this model'),
    (
      MPRNET,
      dict(TINY, n_feat=16),
      r'parameter \w+/\S+ has shape \(.*\) in the checkpoint, \(.*\) in this '
      r'model$',
    ),
    (
      dict(MPRNET, stages=3),
      TINY,  # stage 2 without stage 1: no fusion convs
      'parameter stage2_encoder/csff_dec1/kernel is only in this model',
    ),
  ],
)
def test_what_does_not_fit_is_named(tmp_path, source, target, match):
  zeros = jax.tree.map(
    lambda s: np.zeros(s.shape, s.dtype),
    jax.eval_shape(lambda: _init(FCN(**source), 0)),
  )
  workdir = _save(tmp_path, source, zeros)
  fresh = jax.eval_shape(lambda: _init(FCN(**target), 1))
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match=match):
    checkpoint.warm_start(fresh, workdir)


def test_the_trainer_reports_a_misfit_as_a_config_error(
  mprnet_run, tmp_path, monkeypatch
):
  monkeypatch.setattr(distributed, 'prepare_datasets', lambda *a: None)
  config = tiny.get_config()
  config.model.stages = 2
  config.update(init_from=mprnet_run[0], num_train_steps=0, eval_datasets=())
  with pytest.raises(
    train.ConfigError,
    match=r'^init_from .*: its module (concat12|msam12|'
    r'shallow_feat1|stage1_\w+) is not in this model$',
  ):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
