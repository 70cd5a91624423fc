"""Tests of the serving artefact (fcn_jax.export, examples/run_exported.py).

The artefact is run in a subprocess in which importing flax, optax, orbax or
fcn_jax raises, and compared with fcn_jax.load on the same images.
"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import fcn_jax
from fcn_jax import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(13, 21), (24, 16)]  # two shapes through one symbolic artefact

RUNNER = r'''
import importlib.abc, json, sys
BLOCKED = ('flax', 'optax', 'orbax', 'fcn_jax')

class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED:
      raise ImportError(f'{name} is blocked in this test')

sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1] + '/examples')
import numpy as np
import run_exported
args = json.loads(sys.argv[2])
exported = run_exported.load(args['model'])
for src in args['npy']:
  np.save(src + '.out.npy', run_exported.deblur(exported, np.load(src)))
for src, dst in args['png']:
  run_exported.main([f'--model={args["model"]}', f'--input={src}',
                     f'--output={dst}'])
assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]
'''


@pytest.fixture(scope='module')
def workdir(tiny_checkpoint):
  return tiny_checkpoint


def env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)


@pytest.mark.slow
def test_artefact_runs_without_flax_and_matches_load(workdir, tmp_path):
  model_file = str(tmp_path / 'fcn.jaxexport')
  exported = export.run(workdir, model_file, platforms=['cpu'])
  assert str(exported.in_avals[0].shape) == '(b, 8*h, 8*w, 3)'
  rng = np.random.default_rng(0)
  npy, png, images = [], [], []
  for i, (h, w) in enumerate(SIZES):
    image = rng.integers(0, 256, (h, w, 3), np.uint8)
    images.append(image)
    np.save(tmp_path / f'{i}.npy', image / np.float32(255))
    Image.fromarray(image).save(tmp_path / f'{i}.png')
    npy.append(str(tmp_path / f'{i}.npy'))
    png.append((str(tmp_path / f'{i}.png'), str(tmp_path / f'{i}.out.png')))
  proc = subprocess.run(
    [
      sys.executable,
      '-c',
      RUNNER,
      REPO,
      json.dumps(dict(model=model_file, npy=npy, png=png)),
    ],
    capture_output=True,
    text=True,
    env=env(),
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr

  deblur = fcn_jax.load(workdir)
  for i, image in enumerate(images):
    expected = deblur(image / np.float32(255))
    got = np.load(f'{npy[i]}.out.npy')
    assert got.shape == image.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert np.abs(got - image / 255).max() > 0.05  # the model did something
    deblur.deblur_file(png[i][0], str(tmp_path / f'{i}.ref.png'))
    np.testing.assert_array_equal(
      np.asarray(Image.open(png[i][1])),
      np.asarray(Image.open(tmp_path / f'{i}.ref.png')),
    )


@pytest.mark.parametrize('case', ['no_checkpoint', 'no_folder', 'is_folder'])
def test_bad_paths_name_the_path_and_write_nothing(workdir, tmp_path, case):
  output, wd = tmp_path / 'fcn.jaxexport', workdir
  output.write_bytes(b'an earlier artefact')
  if case == 'no_checkpoint':
    wd = expected = str(tmp_path / 'missing')
  elif case == 'no_folder':
    output = tmp_path / 'missing' / 'fcn.jaxexport'
    expected = str(output)
  else:
    output = expected = tmp_path
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(export.ExportError) as e:
    export.run(wd, str(output))
  assert str(e.value).startswith(f'{expected}: ') and '\n' not in str(e.value)
  assert sorted(os.listdir(tmp_path)) == before
  assert (tmp_path / 'fcn.jaxexport').read_bytes() == b'an earlier artefact'


def test_cli_error_is_one_line(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'fcn_jax.export',
      f'--workdir={tmp_path}',
      f'--output={tmp_path / "fcn.jaxexport"}',
    ],
    capture_output=True,
    text=True,
    env=env(),
    cwd=REPO,
    timeout=120,
  )
  assert proc.returncode != 0
  assert proc.stderr.splitlines() == [
    f'error: {tmp_path}: no checkpoint (expected best/<step> or '
    'checkpoints/<step>, written by main.py or fcn_jax.convert)'
  ]
  assert os.listdir(tmp_path) == []
