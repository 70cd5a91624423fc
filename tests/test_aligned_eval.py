"""--mode=eval with the 'aligned' evaluator on a small RealBlur-J tree.

The tree is made from photos (`tfds_gopro.realblur.dummy_tree`: 3 test pairs
of 64x80 with real motion blur) and built by the `realblur` builder; the
model is a random tiny FCN saved as a checkpoint, its last convolution scaled
down so that, as a trained model's, its output stays near its input (a random
one's output has nothing ECC could register). main.py --mode=eval must
write the GoPro evaluation's files with the aligned figures beside the plain
ones, equal to `fcn_jax.alignment` run directly on the restored images.
"""

import csv
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from fcn_jax import alignment
from fcn_jax import checkpoint
from fcn_jax import evaluators
from fcn_jax.evaluators import aligned
from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY
from tfds_gopro.realblur import dummy_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = 'realblur_j_test'
CONFIG = """
import ml_collections
from configs import tiny
from fcn_jax import evaluators


def get_config():
  config = tiny.get_config()
  config.evals = ml_collections.ConfigDict(
    dict(realblur_j=evaluators.evaluator_config(
      'aligned', 'realblur/j:test', num_images_logged=2, save_images=True)),
    sort_keys=False,
  )
  config.best_eval = 'realblur_j'
  config.eval_batch_size = 2
  return config
"""


@pytest.fixture(name='setup', scope='module')
def _setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('realblur')
  dummy_tree.write_original(root / 'manual')
  data_dir = root / 'data'
  tfds.builder('realblur/j', data_dir=data_dir).download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=str(root / 'manual')
    )
  )
  params = jax.jit(functools.partial(init_params, FCN(**TINY)))(
    jax.random.key(0)
  )
  params = jax.tree_util.tree_map(lambda x: x, params)
  params['tail']['kernel'] = params['tail']['kernel'] * 0.05
  workdir = root / 'work'
  mngr = checkpoint.make_manager(str(workdir))
  checkpoint.save(
    mngr, 0, params=params, config=tiny.get_config().to_dict(), meta={}
  )
  mngr.wait_until_finished()
  mngr.close()
  config_file = root / 'realblur_eval.py'
  config_file.write_text(CONFIG)
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'main.py'),
      f'--config={config_file}',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      '--mode=eval',
    ],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir / 'eval' / FOLDER, params, data_dir, proc.stdout


@pytest.mark.slow
def test_files_hold_plain_and_aligned_figures(setup):
  folder, params, data_dir, stdout = setup
  summary = json.loads((folder / 'summary.json').read_text())
  assert summary['dataset'] == 'realblur/j:test'
  assert summary['num_images'] == 3
  with open(folder / 'per_image.csv') as f:
    rows = list(csv.DictReader(f))
  assert sorted(r['id'] for r in rows) == dummy_tree.ids('test')
  assert (folder / 'grid.png').is_file()
  for prefix in ('', 'input_'):
    for key in ('psnr', 'ssim_per_channel', 'aligned_psnr', 'aligned_ssim'):
      assert np.isfinite(summary[prefix + key]), prefix + key
      mean = np.mean([float(r[prefix + key]) for r in rows])
      assert abs(mean - summary[prefix + key]) < 1e-5
  # The printed table has the aligned columns.
  assert 'aligned PSNR' in stdout
  line = next(l for l in stdout.splitlines() if 'realblur/j:test restored' in l)
  assert f'{summary["aligned_psnr"]:.3f}' in line


def test_aligned_figures_equal_a_direct_computation(setup):
  """The CSV's aligned figures are `alignment.aligned_metrics` of the saved
  restored PNGs (and of the blurry images), aligned in the evaluator's
  batches: [0, 1] and [2, 2] (padding repeats its batch's first image)."""
  folder, _, data_dir, _ = setup
  with open(folder / 'per_image.csv') as f:
    rows = list(csv.DictReader(f))
  source = tfds.data_source('realblur/j', split='test', data_dir=data_dir)
  examples = {e['id'].decode(): e for e in source}
  ids = [r['id'] for r in rows]  # In the evaluation's order.
  sharp = np.stack([examples[i]['sharp'] for i in ids]) / 255.0
  blur = np.stack([examples[i]['blur'] for i in ids]) / 255.0
  saved = np.stack(
    [
      np.asarray(Image.open(folder / 'images' / f'{i.replace("/", "_")}.png'))
      for i in ids
    ]
  )
  restored = saved / 255.0
  direct = {}
  for prefix, images in (('', restored), ('input_', blur)):
    for batch in ([0, 1], [2, 2]):
      out = alignment.aligned_metrics(
        jnp.asarray(images[batch], jnp.float32),
        jnp.asarray(sharp[batch], jnp.float32),
      )
      i = batch[0] if batch == [2, 2] else None
      for row, k in enumerate(batch if i is None else [i]):
        direct[prefix, k] = {
          key: float(v[row]) for key, v in out.items() if key != 'warp'
        }
  # Inside the evaluation's jit XLA orders the float32 sums otherwise: the
  # tolerances of tests/test_alignment.py (0.01 dB, SSIM 5e-4).
  for k, row in enumerate(rows):
    for prefix in ('', 'input_'):
      d = direct[prefix, k]
      assert abs(float(row[prefix + 'aligned_psnr']) - d['psnr']) < 0.01
      assert abs(float(row[prefix + 'aligned_ssim']) - d['ssim']) < 5e-4
      assert (
        abs(float(row[prefix + 'aligned_valid']) - d['valid_fraction']) < 1e-3
      )
      assert float(row[prefix + 'aligned_converged']) == d['converged'] == 1.0


def test_bad_ecc_options_are_one_line():
  config = evaluators.evaluator_config(
    'aligned', 'realblur/j:test', ecc_iterations=0
  )
  error = aligned.AlignedEvaluator.check('rb', config)
  assert error == 'config.evals.rb.ecc_iterations=0 must be positive'
