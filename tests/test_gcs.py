"""gs:// paths end to end, against a local Cloud Storage emulator.

main.py, fcn_jax.predict and fcn_jax.convert run as subprocesses whose TensorStore (Orbax's
arrays), ArrayRecord reader (TFDS's data) and TensorFlow file system
(etils.epath, TFDS, Orbax's directories, TensorBoard) all talk to
fake-gcs-server (see gcs_emulator.py). They run in an empty local folder, which
must stay empty: a gs:// path taken for a local one would appear there as
'gs:/...'. One JAX compilation cache serves all the runs.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from bench import torch_weights
from tests import gcs_emulator
from fcn_jax.models.presets import TINY

pytestmark = pytest.mark.gcs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'fcn-test'
GS = f'gs://{BUCKET}'
EVAL_DIR = 'run/eval/synthetic_blur_tiny_test'
TINY_CONFIG = os.path.join(ROOT, 'configs', 'tiny.py')


@pytest.fixture(scope='module')
def gcs():
  with gcs_emulator.Emulator() as emulator:
    emulator.create_bucket(BUCKET)
    yield emulator


@pytest.fixture(scope='module')
def run(gcs, tmp_path_factory):
  """Runs a command of this project against the emulator; returns its log."""
  cwd = tmp_path_factory.mktemp('cwd')
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    PYTHONPATH=ROOT,
    JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    **gcs.env,
  )

  def run_(*args):
    proc = subprocess.run(
      [sys.executable, *args],
      cwd=cwd,
      env=env,
      timeout=600,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + gcs.server_log()
    assert not os.listdir(cwd), f'local files written: {os.listdir(cwd)}'
    return proc.stdout

  return run_


def train(run, *args):
  return run(
    os.path.join(ROOT, 'main.py'),
    f'--config={TINY_CONFIG}',
    f'--workdir={GS}/run',
    f'--config.data_dir={GS}/data',
    '--config.checkpoint_every_steps=2',
    '--config.eval_every_steps=2',
    '--config.log_every_steps=2',
    *args,
  )


@pytest.fixture(scope='module')
def trained(run):
  """The tiny config trained for 2 steps, then resumed to 3, all on gs://."""
  first = train(run, '--config.num_train_steps=2')
  second = train(
    run, '--config.num_train_steps=3', f'--config.init_from={GS}/run'
  )
  return first, second


def test_train_and_resume_on_gs(gcs, trained):
  first, second = trained
  names = gcs.list(BUCKET)
  # The synthetic dataset, built on the fly into the empty gs:// data_dir.
  version = 'data/synthetic_blur/tiny/1.1.0/'
  for name in (
    'dataset_info.json',
    'features.json',
    'synthetic_blur-train.array_record-00000-of-00001',
    'synthetic_blur-test.array_record-00000-of-00001',
  ):
    assert version + name in names
  # Orbax: the latest two (config.checkpoint_keep) and the best, complete.
  assert 'Resumed from gs://fcn-test/run/checkpoints at step 2' in second
  assert 'Resumed' not in first
  steps = {
    n.split('/')[2]
    for n in names
    if n.startswith('run/checkpoints/') and n.count('/') > 2
  }
  assert steps == {'2', '3'}
  assert 'run/checkpoints/3/commit_success.txt' in names
  meta = json.loads(gcs.download(BUCKET, 'run/checkpoints/3/meta/metadata'))
  assert meta['step'] == 3 and meta['samples_seen'] == 3 * 4
  assert any(
    n.startswith('run/best/') and n.endswith('/params/manifest.ocdbt')
    for n in names
  )
  # TensorBoard events of both runs, and the final evaluation's files.
  assert sum(n.startswith('run/events.out.tfevents.') for n in names) == 2
  summary = json.loads(gcs.download(BUCKET, f'{EVAL_DIR}/summary.json'))
  assert summary['num_images'] == 6 and np.isfinite(summary['psnr'])
  rows = gcs.download(BUCKET, f'{EVAL_DIR}/per_image.csv').decode().splitlines()
  assert len(rows) == 1 + 6 and rows[0].startswith('index,id,psnr')
  grid = Image.open(io.BytesIO(gcs.download(BUCKET, f'{EVAL_DIR}/grid.png')))
  assert grid.mode == 'RGB' and grid.size[0] % 3 == 0  # blurry|restored|sharp
  assert not [n for n in names if n.endswith('.tmp')]


def test_predict_and_evaluate_on_gs(gcs, trained, run):
  del trained
  rng = np.random.default_rng(0)
  sizes = {'a': (16, 16), 'b': (12, 20)}
  for stem, (h, w) in sizes.items():
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
      buffer, 'PNG'
    )
    gcs.upload(BUCKET, f'in/{stem}.png', buffer.getvalue())
  run(
    '-m',
    'fcn_jax.predict',
    f'--workdir={GS}/run',
    f'--input={GS}/in',
    f'--output={GS}/out',
  )
  for stem in sizes:
    image = Image.open(io.BytesIO(gcs.download(BUCKET, f'out/{stem}.png')))
    assert (image.mode, image.size[::-1]) == ('RGB', sizes[stem])
  # --mode=eval: summary, per-image scores and every restored image.
  log = run(
    os.path.join(ROOT, 'main.py'),
    f'--config={TINY_CONFIG}',
    f'--workdir={GS}/run',
    f'--config.data_dir={GS}/data',
    '--mode=eval',
    '--config.eval.save_images=True',
  )
  assert 'synthetic_blur/tiny:test restored      6' in log
  images = [
    n for n in gcs.list(BUCKET, f'{EVAL_DIR}/images/') if not n.endswith('/')
  ]  # (folders are empty objects on GCS)
  assert len(images) == 6 and all(n.endswith('.png') for n in images)
  assert not [n for n in gcs.list(BUCKET) if n.endswith('.tmp')]


def test_convert_to_gs(gcs, run, tiny_params, tmp_path):
  torch = pytest.importorskip('torch')
  state_dict = torch_weights.flax_to_torch(tiny_params, TINY['num_cab'])
  pth = tmp_path / 'model_best.pth'
  torch.save(
    {
      'state_dict': {
        k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()
      }
    },
    pth,
  )
  log = run(
    '-m',
    'fcn_jax.convert',
    f'--torch_checkpoint={pth}',
    f'--workdir={GS}/converted',
  )
  assert f'wrote {GS}/converted/checkpoints/0' in log
  names = gcs.list(BUCKET, 'converted/')
  assert 'converted/checkpoints/0/commit_success.txt' in names
  assert any(n.startswith('converted/checkpoints/0/params/') for n in names)
