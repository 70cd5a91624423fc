"""--mode=eval on an untrained tiny checkpoint: every test image once, the same
results on 1 and 4 devices, saved images, the ensemble, a missing checkpoint.

Nothing is trained: the module writes one checkpoint of random parameters and
copies it into each test's workdir. The 6 test images of synthetic_blur/tiny
(32x48) are evaluated in batches of 4, so the last batch is half padding.
"""

import csv
import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import pytest

from configs import tiny
from fcn_jax import checkpoint
from fcn_jax import errors
from fcn_jax import evaluators
from fcn_jax import inference
from fcn_jax import data
from fcn_jax import metrics
from fcn_jax import models

SPEC = 'synthetic_blur/tiny:test'
NAME = 'synthetic_blur_tiny_test'
NUM_IMAGES = 6
FIELDS = (
  'psnr',
  'ssim_matlab',
  'ssim_per_channel',
  'input_psnr',
  'input_ssim_matlab',
  'input_ssim_per_channel',
)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tiny_data'))
  data.prepare_synthetic(SPEC, d)
  return d


@pytest.fixture(scope='module')
def template(tiny_checkpoint):
  """A workdir holding one checkpoint of random tiny parameters (step 0)."""
  return tiny_checkpoint


def new_workdir(template, path) -> str:
  shutil.copytree(template, path)
  return str(path)


def eval_config(data_dir, **eval_options):
  config = tiny.get_config()
  config.data_dir = data_dir
  config.eval_batch_size = 4
  config.evals.tiny.update(eval_options)
  return config


def read_summary(workdir) -> dict:
  with open(os.path.join(workdir, 'eval', NAME, 'summary.json')) as f:
    return json.load(f)


def read_csv(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'eval', NAME, 'per_image.csv')) as f:
    return list(csv.DictReader(f))


def read_test_split(data_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{id: (blur, sharp)} of the test split, uint8, read directly from TFDS."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(
    'synthetic_blur/tiny', split='test', data_dir=data_dir, download=False
  )
  out = {}
  for i in range(len(source)):
    ex = source[i]
    key = ex['id'].decode() if isinstance(ex['id'], bytes) else str(ex['id'])
    out[key] = (np.asarray(ex['blur']), np.asarray(ex['sharp']))
  return out


@pytest.fixture(scope='module')
def plain(template, data_dir, tmp_path_factory):
  """(workdir, summaries) of `evaluators.evaluate` (--mode=eval) in this process."""
  workdir = new_workdir(template, tmp_path_factory.mktemp('plain') / 'w')
  return workdir, evaluators.evaluate(eval_config(data_dir), workdir)


@pytest.fixture(scope='module')
def ensembled(template, data_dir, tmp_path_factory):
  """As `plain`, with the x8 ensemble and the restored images saved."""
  workdir = new_workdir(template, tmp_path_factory.mktemp('ensembled') / 'w')
  config = eval_config(data_dir, ensemble=True, save_images=True)
  return workdir, evaluators.evaluate(config, workdir)


def test_summary_and_csv_count_every_image_once(plain, data_dir):
  workdir, summaries = plain
  summary = read_summary(workdir)
  assert summaries == [summary]
  assert summary['dataset'] == SPEC and summary['num_images'] == NUM_IMAGES
  assert set(FIELDS) <= set(summary)
  rows = read_csv(workdir)
  ids = [r['id'] for r in rows]
  assert len(rows) == NUM_IMAGES and len(set(ids)) == NUM_IMAGES
  assert [int(r['index']) for r in rows] == list(range(NUM_IMAGES))
  assert ids == data.eval_ids(SPEC, data_dir)
  for k in FIELDS:
    assert summary[k] == pytest.approx(
      np.mean([float(r[k]) for r in rows]), abs=1e-5
    )


def test_metrics_equal_a_direct_computation(plain, template, data_dir):
  workdir, _ = plain
  rows = {r['id']: r for r in read_csv(workdir)}
  data = read_test_split(data_dir)
  assert sorted(data) == sorted(rows)
  keys = sorted(data)
  blur = np.stack([data[k][0] for k in keys])
  sharp = np.stack([data[k][1] for k in keys])
  params, saved = checkpoint.load_params(template)
  restored = jax.jit(inference.restore, static_argnums=0)(
    models.model_from_config(saved), params, blur.astype(np.float32) / 255
  )
  direct = {
    **metrics.image_metrics(restored, sharp),
    **{f'input_{k}': v for k, v in metrics.image_metrics(blur, sharp).items()},
  }
  summary = read_summary(workdir)
  for k in FIELDS:
    ours = np.array([float(rows[key][k]) for key in keys])
    np.testing.assert_allclose(
      ours, np.asarray(direct[k]), rtol=1e-5, atol=1e-5, err_msg=k
    )
    assert summary[k] == pytest.approx(float(np.mean(direct[k])), abs=1e-5), k


def test_release_validation_centre_crops_and_float_psnr(
  template, data_dir, tmp_path
):
  """center_crop, quantize=False: the release's validation PSNR."""
  workdir = new_workdir(template, tmp_path / 'crop')
  config = eval_config(
    data_dir, center_crop=16, quantize=False, save_images=True
  )
  (summary,) = evaluators.evaluate(config, workdir)
  rows = {r['id']: r for r in read_csv(workdir)}
  data = read_test_split(data_dir)
  keys = sorted(data)
  # 32x48 images: torchvision's centre crop starts at row 8, column 16.
  blur = np.stack([data[k][0] for k in keys])[:, 8:24, 16:32] / 255
  sharp = np.stack([data[k][1] for k in keys])[:, 8:24, 16:32] / 255
  params, saved = checkpoint.load_params(template)
  restored = np.asarray(
    jax.jit(inference.restore, static_argnums=0)(
      models.model_from_config(saved), params, blur.astype(np.float32)
    ),
    np.float64,
  )
  # The release's torchPSNR: both clamped to [0, 1], no rounding to levels.
  rmse = np.sqrt(np.mean((np.clip(restored, 0, 1) - sharp) ** 2, (1, 2, 3)))
  expected = 20 * np.log10(1 / rmse)
  ours = np.array([float(rows[k]['psnr']) for k in keys])
  np.testing.assert_allclose(ours, expected, atol=1e-3)
  assert summary['psnr'] == pytest.approx(expected.mean(), abs=1e-3)
  quantized = metrics.psnr(
    restored.astype(np.float32), sharp.astype(np.float32)
  )
  assert np.abs(ours - np.asarray(quantized)).max() > 1e-3  # Not 8-bit levels.
  image = os.path.join(
    workdir, 'eval', NAME, 'images', f'{keys[0].replace("/", "_")}.png'
  )
  assert np.asarray(Image.open(image)).shape == (16, 16, 3)


@pytest.mark.slow
def test_four_devices_write_the_same_results(
  plain, template, data_dir, tmp_path, run_main
):
  workdir = new_workdir(template, tmp_path / 'four')
  proc = run_main(
    workdir, data_dir, '--mode=eval', '--config.eval_batch_size=4', devices=4
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '(4 per process)' in proc.stderr  # main.py's device line
  one, four = read_summary(plain[0]), read_summary(workdir)
  assert one['num_images'] == four['num_images'] == NUM_IMAGES
  for k in FIELDS:
    assert four[k] == pytest.approx(one[k], abs=1e-5), k
  rows_one, rows_four = read_csv(plain[0]), read_csv(workdir)
  assert [(r['index'], r['id']) for r in rows_four] == [
    (r['index'], r['id']) for r in rows_one
  ]
  for a, b in zip(rows_one, rows_four):
    for k in FIELDS:
      assert float(b[k]) == pytest.approx(float(a[k]), abs=1e-5), (a['id'], k)


def test_save_images_writes_every_restored_image(ensembled, data_dir):
  workdir, _ = ensembled
  folder = os.path.join(workdir, 'eval', NAME, 'images')
  rows = {r['id']: r for r in read_csv(workdir)}
  data = read_test_split(data_dir)
  assert sorted(os.listdir(folder)) == sorted(
    f'{k.replace("/", "_")}.png' for k in data
  )
  for key, (_, sharp) in data.items():
    png = np.asarray(
      Image.open(os.path.join(folder, f'{key.replace("/", "_")}.png'))
    )
    assert png.shape == sharp.shape == (32, 48, 3) and png.dtype == np.uint8
    # The PNG is the image that was scored.
    assert float(metrics.psnr(png, sharp)) == pytest.approx(
      float(rows[key]['psnr']), abs=1e-5
    )


def test_ensemble_changes_the_result_slightly(plain, ensembled):
  one, ens = read_summary(plain[0]), read_summary(ensembled[0])
  assert ens['num_images'] == NUM_IMAGES
  for k in ('input_psnr', 'input_ssim_matlab', 'input_ssim_per_channel'):
    assert ens[k] == one[k]
  assert ens['psnr'] != one['psnr']
  assert ens['psnr'] == pytest.approx(one['psnr'], abs=1.0)
  assert ens['ssim_matlab'] == pytest.approx(one['ssim_matlab'], abs=0.1)


def test_missing_checkpoint_is_one_error_line(tmp_path, data_dir, run_main):
  workdir = tmp_path / 'empty'
  workdir.mkdir()
  proc = run_main(workdir, data_dir, '--mode=eval')
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error:') and str(workdir) in last, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(workdir / 'eval')


def test_old_eval_fields_give_the_same_results(ensembled, data_dir, tmp_path):
  """config.eval.* and eval_datasets (old configs and command lines) still work."""
  workdir = new_workdir(ensembled[0], tmp_path / 'old')
  shutil.rmtree(os.path.join(workdir, 'eval'))
  config = tiny.get_config()
  config.update(data_dir=data_dir, eval_batch_size=4, eval_datasets=(SPEC,))
  config.eval.update(ensemble=True, save_images=True)
  assert evaluators.evaluate(config, workdir) == ensembled[1]
  assert len(os.listdir(os.path.join(workdir, 'eval', NAME, 'images'))) == 6


def test_empty_or_unknown_evaluators_are_one_error_line(tmp_path, data_dir):
  config = tiny.get_config()
  config.update(data_dir=data_dir, eval_datasets=())
  with pytest.raises(errors.ConfigError, match='config.evals is empty'):
    evaluators.evaluate(config, str(tmp_path))
  config = tiny.get_config()
  config.evals.tiny.type = 'aligned_typo'
  with pytest.raises(errors.ConfigError, match="tiny.type='aligned_typo'"):
    evaluators.check(config)
  config = tiny.get_config()
  config.best_eval = 'gopro'
  with pytest.raises(errors.ConfigError, match="best_eval='gopro'"):
    evaluators.check(config)
  config = tiny.get_config()
  with config.unlocked():
    config.evals.again = config.evals.tiny
  with pytest.raises(errors.ConfigError, match='both evaluate'):
    evaluators.check(config)
