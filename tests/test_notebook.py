"""notebooks/deblur.ipynb runs top to bottom on a tiny training checkpoint.

The notebook is executed with nbclient in a kernel of this test's Python
(a kernel spec written for `sys.executable`), with its parameters cell
overridden the way papermill does it (a cell inserted after it).
"""

import json
import os
import sys

import nbformat
from nbclient import NotebookClient
import numpy as np
from PIL import Image
import pytest

from configs import tiny
from fcn_jax import checkpoint
from fcn_jax import train_state

pytestmark = pytest.mark.notebook
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'deblur.ipynb')
STEP = 3


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, tiny_train_state):
  """A checkpoint shaped like training's: params, train state, config, meta."""
  config = tiny.get_config()
  state = tiny_train_state
  d = str(tmp_path_factory.mktemp('workdir'))
  mngr = checkpoint.make_manager(d)
  train_state.save(
    mngr,
    state.replace(step=state.step + STEP),
    config=config.to_dict(),
    batch_size=config.batch_size,  # 4: samples_seen 12
  )
  mngr.wait_until_finished()
  mngr.close()
  return d


def kernel_for_this_python(folder):
  spec = os.path.join(folder, 'kernels', 'fcn-jax-test')
  os.makedirs(spec)
  with open(os.path.join(spec, 'kernel.json'), 'w') as f:
    json.dump(
      {
        'argv': [
          sys.executable,
          '-m',
          'ipykernel_launcher',
          '-f',
          '{connection_file}',
        ],
        'display_name': 'fcn-jax test',
        'language': 'python',
      },
      f,
    )
  return 'fcn-jax-test'


def execute(parameters, tmp_path, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    assert not cell.get('outputs'), 'commit the notebook with cleared outputs'
  index = next(
    i
    for i, c in enumerate(nb.cells)
    if 'parameters' in c.metadata.get('tags', [])
  )
  nb.cells.insert(
    index + 1,
    nbformat.v4.new_code_cell(
      '\n'.join(f'{k} = {v!r}' for k, v in parameters.items())
    ),
  )
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  client = NotebookClient(
    nb,
    kernel_name=kernel_for_this_python(str(tmp_path)),
    timeout=300,
    resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}},
  )
  client.execute()  # raises CellExecutionError on any cell error
  text = []
  images = 0
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      data = out.get('data', {})
      text.append(out.get('text', '') + data.get('text/plain', ''))
      images += 'image/png' in data
  return '\n'.join(text), images


def test_notebook_runs_on_a_training_checkpoint(workdir, tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  sharp = rng.integers(0, 256, (40, 56, 3), np.uint8)
  blurry = (sharp.astype(np.uint16) + np.roll(sharp, 2, axis=1)) // 2
  Image.fromarray(sharp).save(tmp_path / 'sharp.png')
  Image.fromarray(blurry.astype(np.uint8)).save(tmp_path / 'blurry.png')
  parameters = dict(
    WORKDIR=workdir,
    BLURRY=str(tmp_path / 'blurry.png'),
    SHARP=str(tmp_path / 'sharp.png'),
  )
  text, images = execute(parameters, tmp_path, monkeypatch)
  assert images == 1
  assert f'{workdir}: checkpoints/{STEP}' in text
  assert 'restored: psnr ' in text and 'ssim_matlab' in text
  assert f'step {STEP}' in text and 'trust ratios' in text
  assert "items: ['config', 'meta', 'params', 'train']" in text
