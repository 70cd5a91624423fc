"""Training: the tiny config end to end, on 1 and 4 devices, exact resume after
kill -9, learned trust ratios, NaN handling and the start-up checks."""

import glob
import os
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from fcn_jax import checkpoint
from fcn_jax import distributed
from fcn_jax import models
from fcn_jax import train
from fcn_jax import train_state
from fcn_jax.evaluators import full_image


def tiny_config(data_dir, **overrides):
  config = tiny.get_config()
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def scalars(workdir, tag):
  """{step: value} of a scalar written by the clu writer (TensorBoard files)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top

  values = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    acc = event_accumulator.EventAccumulator(path, size_guidance={'tensors': 0})
    acc.Reload()
    if tag in acc.Tags().get('tensors', []):
      for event in acc.Tensors(tag):
        values[event.step] = float(tf.make_ndarray(event.tensor_proto))
  return values


def final_params(workdir):
  """(params, step) of the latest checkpoint of `workdir`."""
  mngr = checkpoint.make_manager(str(workdir), read_only=True)
  step = mngr.latest_step()
  config = mngr.restore(
    step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
  )['config']
  target = checkpoint.abstract_params(models.model_from_config(config))
  restored = mngr.restore(
    step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
  )
  return restored['params'], step


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tiny_data')


@pytest.fixture(scope='module')
def reference_run(data_dir, tmp_path_factory):
  """The tiny config trained once, uninterrupted, in this process (1 device)."""
  workdir = tmp_path_factory.mktemp('reference')
  state = train.train_and_evaluate(tiny_config(data_dir), str(workdir))
  return workdir, state


@pytest.mark.slow
def test_tiny_run_end_to_end(reference_run):
  workdir, state = reference_run
  config = tiny.get_config()
  assert int(state.step) == config.num_train_steps
  params, step = final_params(workdir)
  assert step == config.num_train_steps
  _, saved = checkpoint.load_params(str(workdir))
  assert (
    saved['model']['n_feat'] == config.model.n_feat
    and saved['seed'] == config.seed
  )
  # Best checkpoint by PSNR, and evaluation/logging happened.
  assert checkpoint.find(str(workdir))[0] == checkpoint.BEST
  psnr = scalars(workdir, 'eval_synthetic_blur_tiny_test_psnr')
  assert sorted(psnr) == [6, 12]
  losses = scalars(workdir, 'train_loss')
  assert sorted(losses) == [4, 8, 12] and losses[12] < losses[4]
  for tag in (
    'train_loss_final',
    'train_loss_stage2',
    'train_loss_stage1',
    'train_psnr',
    'train_grad_norm',
    'train_learning_rate',
    'train_trust_final',
  ):
    assert scalars(workdir, tag), tag


@pytest.mark.slow
def test_learned_trust_ratios_move_and_stay_bounded(reference_run):
  _, state = reference_run
  ratios = np.asarray(jax.nn.sigmoid(state.params['trust']))
  assert ((ratios > 0.05) & (ratios < 1)).all()
  assert np.abs(ratios - tiny.get_config().loss.trust_init).min() > 1e-4


@pytest.mark.slow
def test_four_devices_give_the_same_losses(
  reference_run, data_dir, tmp_path, run_main
):
  proc = run_main(tmp_path / 'four', data_dir, devices=4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  one = scalars(reference_run[0], 'train_loss')
  four = scalars(tmp_path / 'four', 'train_loss')
  assert sorted(one) == sorted(four)
  for step in one:
    assert four[step] == pytest.approx(one[step], rel=1e-4, abs=1e-6)
  p1, _ = final_params(reference_run[0])
  p4, _ = final_params(tmp_path / 'four')
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_kill_9_and_restart_is_bit_exact(
  reference_run, data_dir, tmp_path, run_main
):
  workdir = tmp_path / 'killed'
  proc = run_main(workdir, data_dir, wait=False)
  deadline = time.time() + 300
  # Kill as soon as the first checkpoint is complete, mid-run.
  while not glob.glob(
    str(workdir / 'checkpoints' / '4' / 'commit_success.txt')
  ):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[
      0
    ][-3000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert (
    checkpoint.make_manager(str(workdir), read_only=True).latest_step() < 12
  )
  # Resumed on the decoded cache: the same batches as the PNGs of the reference.
  proc = run_main(
    workdir, data_dir, f'--config.decoded_cache_dir={tmp_path / "decoded"}'
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert list((tmp_path / 'decoded').glob('synthetic_blur_tiny_train-*.u8'))
  assert 'Resumed from' in proc.stderr
  ours, step = final_params(workdir)
  theirs, _ = final_params(reference_run[0])
  assert step == 12
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(
  data_dir, tmp_path, monkeypatch
):
  from fcn_jax import data  # pylint: disable=g-import-not-at-top

  real = data.train_iterator

  def poisoned(*args, **kwargs):
    for step, batch in enumerate(
      real(*args, **kwargs), start=kwargs.get('start_step', 0) + 1
    ):
      if step == 3:
        # The stream yields uint8; a float batch can carry the NaN.
        batch = dict(
          batch, blur=np.full(batch['blur'].shape, np.nan, np.float32)
        )
      yield batch

  monkeypatch.setattr(data, 'train_iterator', poisoned)
  config = tiny_config(
    data_dir,
    checkpoint_every_steps=2,
    eval_every_steps=0,
    num_train_steps=6,
    log_every_steps=100,
  )
  with pytest.raises(train.NonFiniteLossError, match='at step 3'):
    train.train_and_evaluate(config, str(tmp_path))
  params, step = final_params(tmp_path)
  assert step == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize(
  'overrides,match',
  [
    (dict(batch_size=3), 'batch_size=3 is not divisible'),
    (dict(crop_size=36), 'crop_size=36 must be a positive multiple of 8'),
    (dict(loss=dict(trust='adaptive')), "trust='adaptive'"),
    (dict(optimizer=dict(schedule='linear')), "schedule 'linear'"),
    (dict(init_from='/nonexistent/run'), 'init_from=/nonexistent/run'),
    (dict(train_patch='warp'), "train_patch='warp'"),
    (dict(best_rule='ssim'), "best_rule='ssim'"),
    (dict(eval=dict(center_crop=0)), 'center_crop=0 must be positive'),
  ],
)
def test_start_up_checks(overrides, match, monkeypatch):
  config = tiny.get_config()
  for key, value in overrides.items():
    if isinstance(value, dict):
      config[key].update(value)
    else:
      config[key] = value
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  with pytest.raises(train.ConfigError, match=match):
    train.check_config(config, jax.device_count())


def test_missing_dataset_names_the_build_command(tmp_path):
  config = tiny_config(tmp_path, train_dataset='gopro/blur:train')
  with pytest.raises(train.ConfigError, match='tfds build tfds_gopro/gopro'):
    distributed.prepare_datasets((config.train_dataset,), str(tmp_path))


def test_main_reports_config_errors_in_one_line(tmp_path, data_dir, run_main):
  proc = run_main(tmp_path / 'w', data_dir, '--config.crop_size=30')
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
    'error: config.crop_size=30 must be a positive multiple of 8'
  )
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(data_dir, tmp_path, run_main):
  workdir = tmp_path / 'preempted'
  proc = run_main(
    workdir,
    data_dir,
    '--config.num_train_steps=1000',
    '--config.eval_every_steps=0',
    '--config.checkpoint_every_steps=2',
    wait=False,
  )
  deadline = time.time() + 300
  while not glob.glob(
    str(workdir / 'checkpoints' / '2' / 'commit_success.txt')
  ):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[
      0
    ][-3000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-2000:]
  step = checkpoint.make_manager(str(workdir), read_only=True).latest_step()
  assert 2 <= step < 1000
  assert f'SIGTERM: saved step {step}' in out


@pytest.mark.slow
def test_init_from_another_workdir(reference_run, data_dir, tmp_path):
  source, _ = reference_run
  config = tiny_config(
    data_dir,
    init_from=str(source),
    num_train_steps=1,
    eval_datasets=(),
    checkpoint_every_steps=1,
  )
  state = train.train_and_evaluate(config, str(tmp_path))
  start, _ = final_params(source)
  moved = [
    np.abs(np.asarray(a) - np.asarray(b)).max()
    for a, b in zip(
      jax.tree.leaves(state.params['net']), jax.tree.leaves(start)
    )
  ]
  # One Adam step from the source's weights: close to them, but not equal.
  assert max(moved) < 5e-3 and max(moved) > 0
  assert int(state.step) == 1


@pytest.mark.slow
def test_bfloat16_step_keeps_float32_parameters():
  config = tiny.get_config()
  config.model.dtype = 'bfloat16'
  model = models.model_from_config(config)
  tx = train.create_optimizer(config)
  state = jax.jit(
    lambda r: train_state.create_train_state(r, model, tx, config)
  )(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {
    k: jax.numpy.asarray(rng.random((2, 16, 16, 3)), jax.numpy.float32)
    for k in ('blur', 'sharp')
  }
  step = jax.jit(
    lambda s, b: train.train_step(
      s,
      b,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=train.create_learning_rate_fn(config),
    )
  )
  new_state, metrics = step(state, batch)
  assert np.isfinite(float(metrics.compute()['loss']))
  for leaf in jax.tree.leaves((new_state.params, new_state.opt_state)):
    assert leaf.dtype in (np.float32, np.int32), leaf.dtype
  changed = [
    not np.array_equal(a, b)
    for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(new_state.params)
    )
  ]
  # All but channel-attention layers whose 2-channel squeeze is dead at this
  # tiny width (their ReLU outputs are 0 for these inputs, in float32 too).
  assert np.mean(changed) > 0.8
  assert not np.array_equal(state.params['trust'], new_state.params['trust'])


# (PSNR, SSIM) of successive evaluations.
_EVALS = ((30.0, 0.90), (30.5, 0.89), (29.0, 0.95), (30.2, 0.91))


@pytest.mark.parametrize(
  'rule,new_bests',
  [
    ('psnr', [True, True, False, False]),
    ('psnr_and_ssim', [True, False, False, True]),
  ],
)
def test_is_new_best(rule, new_bests):
  best, got = None, []
  for psnr, ssim in _EVALS:
    summary = {'psnr': psnr, 'ssim_matlab': ssim, 'dataset': 'd'}
    got.append(train.is_new_best(rule, summary, best))
    if got[-1]:
      best = summary
  assert got == new_bests
  # A best saved without SSIM (before best_rule existed) is beaten on PSNR.
  assert train.is_new_best(
    'psnr_and_ssim', {'psnr': 31, 'ssim_matlab': 0.5}, {'psnr': 30.5}
  )
  assert not train.is_new_best(
    'psnr_and_ssim', {'psnr': 30, 'ssim_matlab': 1}, {'psnr': 30.5}
  )


@pytest.mark.slow
def test_paper_best_rule_and_resized_patches_in_a_run(
  data_dir, tmp_path, monkeypatch
):
  """best_rule='psnr_and_ssim' keeps the checkpoint it says (scripted)."""
  scores = iter(_EVALS)

  def scripted(spec, *args, **kwargs):
    psnr, ssim = next(scores)
    summary = {'dataset': spec, 'num_images': 1}
    for prefix in ('', 'input_'):
      summary.update(
        {
          f'{prefix}psnr': psnr,
          f'{prefix}ssim_matlab': ssim,
          f'{prefix}ssim_per_channel': ssim,
        }
      )
    return summary, []

  monkeypatch.setattr(full_image, 'evaluate_dataset', scripted)
  config = tiny_config(
    data_dir,
    num_train_steps=4,
    checkpoint_every_steps=100,
    best_rule='psnr_and_ssim',
    train_patch='resize',
  )
  config.evals.tiny.every_steps = 1
  train.train_and_evaluate(config, str(tmp_path))
  best = checkpoint.make_manager(str(tmp_path), checkpoint.BEST, read_only=True)
  assert best.latest_step() == 4  # The PSNR rule would have kept step 2.
  meta = best.restore(4, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  assert meta['meta']['metrics'] == {
    'psnr': 30.2,
    'ssim_matlab': 0.91,
    'dataset': 'synthetic_blur/tiny:test',
  }


def test_train_metrics_average_losses_and_keep_the_last_ratios():
  def step_metrics(loss, trust, learning_rate):
    return train.TrainMetrics.single_from_model_output(
      loss=jax.numpy.float32(loss),
      psnr=jax.numpy.array([30.0, 32.0]),
      grad_norm=jax.numpy.float32(2 * loss),
      learning_rate=jax.numpy.float32(learning_rate),
      **{f'loss_{s}': jax.numpy.float32(loss / 3) for s in train_state.STAGES},
      **{f'trust_{s}': jax.numpy.float32(trust) for s in train_state.STAGES},
    )

  values = (
    step_metrics(0.5, 0.9, 1e-3).merge(step_metrics(0.25, 0.7, 5e-4)).compute()
  )
  assert set(values) == {
    'loss',
    'psnr',
    'grad_norm',
    'learning_rate',
    *(f'{k}_{s}' for k in ('loss', 'trust') for s in train_state.STAGES),
  }
  np.testing.assert_allclose(
    [values['loss'], values['psnr'], values['grad_norm']], [0.375, 31.0, 0.75]
  )
  np.testing.assert_allclose(values['learning_rate'], 5e-4)  # the last step's
  for s in train_state.STAGES:
    np.testing.assert_allclose(values[f'loss_{s}'], 0.125)
    np.testing.assert_allclose(values[f'trust_{s}'], 0.7)


def test_uint8_batches_train_like_float_batches():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class ThreeStages(nn.Module):  # A stand-in for FCN: one conv, three outputs.
    @nn.compact
    def __call__(self, x):
      y = nn.Conv(3, (3, 3), use_bias=False)(x)
      return y, 0.5 * y, 0.25 * y

  config = tiny.get_config()
  model = ThreeStages()
  tx = train.create_optimizer(config)
  params = {
    'net': model.init(jax.random.key(0), np.zeros((1, 8, 8, 3)))['params'],
    'trust': train_state.initial_trust_logits(config),
  }
  state = train_state.TrainState(
    step=jax.numpy.zeros((), jax.numpy.int32),
    params=params,
    opt_state=tx.init(params),
  )
  rng = np.random.default_rng(0)
  uint8 = {
    k: rng.integers(0, 256, (2, 16, 16, 3), np.uint8) for k in ('blur', 'sharp')
  }
  floats = {k: np.float32(v) / np.float32(255) for k, v in uint8.items()}
  step = jax.jit(
    lambda s, b: train.train_step(
      s,
      b,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=train.create_learning_rate_fn(config),
    )
  )
  (a, ma), (b, mb) = step(state, uint8), step(state, floats)
  for key in ('loss', 'psnr'):
    assert float(ma.compute()[key]) == pytest.approx(
      float(mb.compute()[key]), rel=1e-6
    )
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, atol=1e-6)
  with pytest.raises(
    AssertionError
  ):  # The same bytes read as floats train differently.
    np.testing.assert_allclose(
      float(step(state, jax.tree.map(np.float32, uint8))[1].compute()['loss']),
      float(ma.compute()['loss']),
      rtol=1e-3,
    )


def test_prefetch_to_device_keeps_order_and_reads_ahead():
  sharding = jax.sharding.NamedSharding(
    distributed.make_mesh(), jax.sharding.PartitionSpec('data')
  )
  batches = [{'blur': np.full((2, 4, 4, 3), i, np.uint8)} for i in range(5)]
  pulled = []
  source = (pulled.append(i) or b for i, b in enumerate(batches))
  device = train.prefetch_to_device(source, sharding, size=2)
  first = next(device)
  assert pulled == [0, 1]  # The next batch is on its way while one is in use.
  second = next(device)
  assert pulled == [0, 1, 2]
  out = [first, second] + list(device)
  assert len(out) == 5
  for i, batch in enumerate(out):
    assert (
      isinstance(batch['blur'], jax.Array)
      and batch['blur'].sharding == sharding
    )
    np.testing.assert_array_equal(batch['blur'], batches[i]['blur'])


def test_itstime_is_every_n_steps_and_the_last():
  assert [s for s in range(1, 11) if train.itstime(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 11) if train.itstime(s, 0, 10)] == [10]


def test_non_finite_guard_names_the_first_bad_step():
  guard = train.NonFiniteGuard()
  for step, loss in enumerate([1.0, np.inf, np.nan], start=1):
    guard.add(step, jax.numpy.float32(loss))
  with pytest.raises(train.NonFiniteLossError, match='inf at step 2'):
    guard.check(3)
  guard = train.NonFiniteGuard()
  guard.add(1, jax.numpy.float32(1.0))
  guard.check(1, {'w': jax.numpy.ones(2)})
  with pytest.raises(train.NonFiniteLossError, match='parameters .* step 4'):
    guard.check(4, {'w': jax.numpy.array([1.0, np.nan])})


def test_best_keeper_saves_only_its_evaluators_new_bests(tmp_path):
  saved = []
  keeper = train.BestKeeper(
    str(tmp_path), 'psnr', 'a', lambda m, s, metrics: saved.append(metrics)
  )
  assert keeper.metrics is None
  summary = {'dataset': 'x:test', 'psnr': 20.0, 'ssim_matlab': 0.5}
  assert not keeper.consider('b', summary, state=None)
  assert keeper.consider('a', summary, state=None)
  assert not keeper.consider('a', dict(summary, psnr=19.0), state=None)
  assert saved == [{'psnr': 20.0, 'ssim_matlab': 0.5, 'dataset': 'x:test'}]


def test_old_eval_fields_are_translated():
  from fcn_jax import evaluators  # pylint: disable=g-import-not-at-top

  config = tiny.get_config()
  assert evaluators.translate_legacy(config) is config  # nothing to translate
  config.update(
    eval_datasets=('synthetic_blur/tiny:test', 'hide:test'),
    eval_every_steps=3,
  )
  config.eval.center_crop = 16
  new = evaluators.translate_legacy(config)
  assert list(new.evals) == ['synthetic_blur_tiny_test', 'hide_test']
  assert new.best_eval == 'synthetic_blur_tiny_test'
  for options in new.evals.values():
    # The config's own schedule and options, then the old fields given.
    assert (options.every_steps, options.center_crop) == (3, 16)
    assert options.num_images_logged == 2
  assert new.eval_datasets is None and new.eval.center_crop is None
  assert evaluators.translate_legacy(new) is new
  assert config.eval_datasets is not None  # the original is left as it was
