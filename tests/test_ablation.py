"""Table 2's ablation switches: every row's shapes and size, what each switch
removes, training steps at reduced width, and configs/ablation.py."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ablation
from configs import gopro
from configs import tiny
from fcn_jax import losses
from fcn_jax import models
from fcn_jax import train
from fcn_jax import train_state
from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY
from tests.conftest import jitted_apply

ROWS = sorted(ablation.PAPER_PSNR)
MPRNET_PARAMETERS = 20_127_073  # MPRNet's deblurring network (reference facts)


def _sizes(model: FCN, shape=(1, 16, 16, 3)):
  """({top-level module: parameter count}, output shapes) via jax.eval_shape."""
  outputs, variables = jax.eval_shape(
    model.init_with_output,
    jax.random.key(0),
    jax.ShapeDtypeStruct(shape, jnp.float32),
  )
  sizes = {
    name: sum(int(np.prod(l.shape)) for l in jax.tree.leaves(tree))
    for name, tree in variables['params'].items()
  }
  return sizes, [o.shape for o in outputs]


@functools.cache
def _full_sizes(stages: int):
  return _sizes(FCN(stages=stages))[0]


# Modules each switch removes, and the image heads that replace MSAM.
REMOVED = {
  'pb': {'processing_block', 'query_key'},
  'efem': {'query_key'},
  'msam': {'msam12', 'msam23'},
  'rim': {'raw_information'},
}


@pytest.mark.parametrize('stages,without', ROWS)
def test_table2_row_shapes_and_size(stages, without):
  config = ablation.get_config(f'stages={stages},without={without}')
  model = models.model_from_config(config.to_dict())
  sizes, shapes = _sizes(model, (1, 24, 40, 3))
  assert shapes == [(1, 24, 40, 3)] * 3
  full = _full_sizes(stages)
  assert not REMOVED[without] & set(sizes)
  heads = {n for n in sizes if n.startswith('head')}
  if without == 'msam':  # SAM's image branch stays: one 1x1 conv 96 -> 3 each
    assert heads == {f'head{m[4:]}' for m in REMOVED['msam'] & set(full)}
    assert all(sizes[h] == 96 * 3 for h in heads)
  else:
    assert not heads
  # The rest is the full network at this stage count, unchanged.
  assert {n: s for n, s in sizes.items() if n not in heads} == {
    n: s for n, s in full.items() if n not in REMOVED[without]
  }


def test_sizes_of_the_full_model_and_of_mprnet():
  full = _full_sizes(4)
  assert sum(full.values()) == 20_309_376 + 1  # + the shared PReLU slope
  mprnet = _sizes(FCN(use_pb=False, use_efem=False))[0]
  assert sum(mprnet.values()) == MPRNET_PARAMETERS
  # Fewer stages, fewer parameters; stage 1 has no stage 0 and no MSAM.
  counts = [sum(_full_sizes(s).values()) for s in (1, 2, 3, 4)]
  assert counts == sorted(counts) and len(set(counts)) == 4
  assert not {
    'processing_block',
    'query_key',
    'msam23',
    'stage2_encoder',
  } & set(_full_sizes(1))


def _shared_params(model: FCN, full_params: dict) -> dict:
  """Parameters of `model` taken from a full model's (heads: SAM's conv2)."""
  shapes = jax.eval_shape(
    functools.partial(init_params, model), jax.random.key(0)
  )
  out = {}
  for name, tree in shapes.items():
    if name.startswith('head'):
      out[name] = full_params[f'msam{name[4:]}']['conv2']
    else:  # same names, fewer convolutions where a neighbour stage is gone
      out[name] = _prune(full_params[name], tree)
  return out


def _prune(params, like):
  if not isinstance(like, dict):
    return params
  return {k: _prune(params[k], v) for k, v in like.items()}


@functools.cache
def _full_tiny(stages):
  model = FCN(**TINY, stages=stages)
  return jax.jit(functools.partial(init_params, model))(jax.random.key(0))


@pytest.mark.parametrize(
  'stages,without',
  [(4, 'pb'), (4, 'efem'), (4, 'msam'), (4, 'rim'), (3, 'pb'), (2, 'pb')],
)
def test_each_switch_changes_the_output(stages, without):
  """Each switch, with every other weight the full model's, changes the image.

  (Where a stage count lacks a module the row test finds the same network.)
  """
  x = jnp.asarray(np.random.default_rng(0).random((1, 16, 24, 3), np.float32))
  full_model = FCN(**TINY, stages=stages)
  params = _full_tiny(stages)
  model = models.model_from_config(
    ablation.get_config(f'stages={stages},without={without}').to_dict(), **TINY
  )
  ours = jitted_apply(model)({'params': _shared_params(model, params)}, x)
  full = jitted_apply(full_model)({'params': params}, x)
  assert np.abs(np.asarray(ours[0]) - np.asarray(full[0])).max() > 1e-4
  if without == 'msam':  # stage 1's image is SAM's image branch, as before
    np.testing.assert_allclose(ours[2], full[2], atol=1e-5)
    assert np.abs(np.asarray(ours[1]) - np.asarray(full[1])).max() > 1e-4


@pytest.mark.parametrize('stages', [1, 2, 3])
def test_stages_not_built_return_their_input(stages):
  model = FCN(**TINY, stages=stages)
  x = jnp.asarray(np.random.default_rng(1).random((1, 16, 16, 3), np.float32))
  params = jax.jit(functools.partial(init_params, model))(jax.random.key(0))
  final, stage2, stage1 = jax.jit(model.apply)({'params': params}, x)
  np.testing.assert_array_equal(stage1, x)
  assert (stages == 3) != np.array_equal(stage2, x)
  assert np.abs(np.asarray(final) - np.asarray(x)).max() > 1e-4


def test_a_missing_stage_gives_no_gradient():
  """The loss of a stage that is not built is the blurry input's: a constant."""
  model = FCN(**TINY, stages=1)
  params = jax.jit(functools.partial(init_params, model))(jax.random.key(0))
  rng = np.random.default_rng(2)
  blur, sharp = (
    jnp.asarray(rng.random((1, 16, 16, 3)), jnp.float32) for _ in range(2)
  )

  def stage1_loss(p):
    return losses.stage_losses(model.apply({'params': p}, blur), sharp)[2]

  value, grads = jax.jit(jax.value_and_grad(stage1_loss))(params)
  np.testing.assert_allclose(
    value, losses.stage_losses([blur], sharp)[0], rtol=1e-6
  )
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
  'stages,without', [(3, 'msam'), (2, 'efem'), (1, 'rim')]
)
def test_train_steps_at_reduced_width(stages, without):
  config = tiny.get_config()  # reduced widths (TINY)
  config.model.update(stages=stages, **ablation.REMOVE[without])
  train.check_config(config, 1)
  model = models.model_from_config(config)
  tx = train.create_optimizer(config)
  state = jax.jit(
    lambda r: train_state.create_train_state(r, model, tx, config)
  )(jax.random.key(0))
  step = jax.jit(
    functools.partial(
      train.train_step,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=train.create_learning_rate_fn(config),
    )
  )
  rng = np.random.default_rng(3)
  sharp = rng.random((2, 16, 16, 3)).astype(np.float32)
  batch = {
    'sharp': jnp.asarray(sharp),
    'blur': jnp.asarray(0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)),
  }
  totals = []
  for _ in range(3):
    state, metrics = step(state, batch)
    totals.append(float(metrics.compute()['loss']))
  assert np.isfinite(totals).all() and totals[-1] < totals[0]
  assert int(state.step) == 3


def test_switches_that_do_not_fit_are_rejected():
  with pytest.raises(ValueError, match='use_efem=True needs use_pb=True'):
    FCN(**TINY, use_pb=False).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match='stages=5'):
    FCN(**TINY, stages=5).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  config = tiny.get_config()
  config.model.use_pb = False
  with pytest.raises(
    train.ConfigError, match='config.model: FCN.use_efem=True needs'
  ):
    train.check_config(config, 1)


def test_ablation_config_is_the_paper_recipe_with_the_switches():
  config = ablation.get_config('stages=2,without=rim')
  paper = gopro.get_config()
  assert config.model.stages == 2 and config.model.use_rim is False
  assert config.model.use_pb and config.model.use_efem and config.model.use_msam
  config.model.update(stages=4, use_rim=True)
  assert config.to_dict() == paper.to_dict()
  assert ablation.get_config('without=pb').model.use_efem is False
  assert ablation.get_config('').to_dict() == paper.to_dict()


@pytest.mark.parametrize(
  'arg,match',
  [
    ('stages=5', "stages='5'"),
    ('stages=3,without=sam', "without='sam'"),
    ('stage=3', "'stage=3' is not"),
    ('without', "'without' is not"),
  ],
)
def test_bad_ablation_arguments_name_the_value(arg, match):
  with pytest.raises(ValueError, match=match):
    ablation.parse(arg)
  with pytest.raises(SystemExit, match=match):
    ablation.get_config(arg)


def test_main_rejects_a_bad_row_in_one_line(tmp_path, run_main):
  proc = run_main(
    tmp_path / 'w', config='configs/ablation.py:stages=3,without=sam'
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines() == [
    "error: configs/ablation.py: without='sam': use one of none, pb, efem, "
    'msam, rim'
  ]
  assert not os.path.exists(tmp_path / 'w')
