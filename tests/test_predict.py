"""Tests of the predict CLI (fcn_jax.predict) on a tiny checkpoint.

All images are at most 16x16, so they share one compiled shape.
"""

import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

import fcn_jax
from fcn_jax import checkpoint
from fcn_jax import image_io
from fcn_jax import models
from fcn_jax import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(tiny_checkpoint):
  return tiny_checkpoint


def write_inputs(folder):
  """One odd-sized image per kind; returns {file name: expected float RGB}."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  u8 = lambda *shape: rng.integers(0, 256, shape, np.uint8)
  gray, rgba, rgb = u8(13, 11), u8(11, 15, 4), u8(9, 16, 3)
  sixteen = rng.integers(0, 65536, (15, 9), np.uint16)
  Image.fromarray(gray).save(os.path.join(folder, 'gray.png'))
  Image.fromarray(rgba).save(os.path.join(folder, 'rgba.png'))
  Image.fromarray(sixteen).save(os.path.join(folder, 'sixteen.png'))
  Image.fromarray(u8(16, 13, 3)).save(
    os.path.join(folder, 'photo.jpg'), quality=90
  )
  Image.fromarray(rgb).quantize(16).save(os.path.join(folder, 'palette.png'))
  expected = {
    'gray.png': np.repeat(gray[:, :, None], 3, 2) / 255,
    'rgba.png': rgba[:, :, :3] / 255,
    'sixteen.png': np.repeat(sixteen[:, :, None], 3, 2) / 65535,
    'palette.png': np.asarray(
      Image.open(os.path.join(folder, 'palette.png')).convert('RGB')
    )
    / 255,
    'photo.jpg': np.asarray(Image.open(os.path.join(folder, 'photo.jpg')))
    / 255,
  }
  assert Image.open(os.path.join(folder, 'sixteen.png')).mode == 'I;16'
  assert Image.open(os.path.join(folder, 'palette.png')).mode == 'P'
  return expected


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp('inputs'))
  return folder, write_inputs(folder)


def snapshot(folder):
  return {
    n: open(os.path.join(folder, n), 'rb').read() for n in os.listdir(folder)
  }


def test_folder_of_each_kind_matches_the_model(workdir, inputs, tmp_path):
  folder, expected = inputs
  out = str(tmp_path / 'out')
  written = predict.run(workdir, folder, out, progress=False)
  stems = sorted(os.path.splitext(n)[0] for n in expected)
  assert written == [os.path.join(out, s + '.png') for s in stems]
  assert sorted(os.listdir(out)) == [s + '.png' for s in stems]

  params, config = checkpoint.load_params(workdir)
  model = models.model_from_config(config)
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
  for name, x in expected.items():
    with Image.open(
      os.path.join(out, os.path.splitext(name)[0] + '.png')
    ) as im:
      assert im.format == 'PNG' and im.mode == 'RGB'
      assert im.size == Image.open(os.path.join(folder, name)).size
      got = np.asarray(im)
    h, w = x.shape[:2]
    padded = np.pad(
      x.astype(np.float32), ((0, 16 - h), (0, 16 - w), (0, 0)), mode='reflect'
    )
    y = np.asarray(apply(params, padded[None]))[0, :h, :w]
    np.testing.assert_array_equal(
      got, np.rint(np.clip(y, 0, 1) * 255), err_msg=name
    )


def test_single_file(workdir, inputs, tmp_path):
  folder, _ = inputs
  src = os.path.join(folder, 'photo.jpg')
  assert predict.run(workdir, src, str(tmp_path / 'a.png')) == [
    str(tmp_path / 'a.png')
  ]
  assert predict.run(workdir, src, str(tmp_path)) == [
    str(tmp_path / 'photo.png')
  ]
  assert (
    open(tmp_path / 'a.png', 'rb').read()
    == open(tmp_path / 'photo.png', 'rb').read()
  )
  with pytest.raises(predict.PredictError, match='must be a .png'):
    predict.run(workdir, src, str(tmp_path / 'a.jpg'))


def test_load_and_deblur_file(workdir, inputs, tmp_path):
  folder, _ = inputs
  tlc = fcn_jax.load(workdir, tlc_train_size=64, dtype='bfloat16')
  assert tlc.model.tlc_train_size == 64 and tlc.model.dtype == 'bfloat16'
  assert tlc.model.n_feat == 8
  deblurrer = fcn_jax.load(workdir)
  src = os.path.join(folder, 'gray.png')
  deblurrer.deblur_file(src, str(tmp_path / 'g.png'))
  predict.run(workdir, src, str(tmp_path / 'p.png'))
  np.testing.assert_array_equal(
    np.asarray(Image.open(tmp_path / 'g.png')),
    np.asarray(Image.open(tmp_path / 'p.png')),
  )
  np.testing.assert_array_equal(
    deblurrer(np.asarray(Image.open(src))),
    np.asarray(Image.open(tmp_path / 'g.png')),
  )


def test_not_an_image_stops_before_writing(workdir, inputs, tmp_path):
  folder, _ = inputs
  bad = tmp_path / 'in'
  write_inputs(str(bad))
  (bad / 'notes.txt').write_text('not an image')
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'gray.png').write_bytes(b'an earlier result')
  before = snapshot(out)
  with pytest.raises(predict.PredictError) as e:
    predict.run(workdir, str(bad), str(out))
  assert str(e.value) == f'{bad / "notes.txt"}: not an image file'
  assert snapshot(out) == before


@pytest.mark.parametrize(
  'case', ['missing', 'no_checkpoint', 'overwrite', 'same_stem']
)
def test_errors_name_the_path(workdir, inputs, tmp_path, case):
  folder, _ = inputs
  src, out, wd = (
    os.path.join(folder, 'gray.png'),
    str(tmp_path / 'o.png'),
    workdir,
  )
  if case == 'missing':
    src = expected = str(tmp_path / 'missing.png')
  elif case == 'no_checkpoint':
    wd = expected = str(tmp_path)
  elif case == 'overwrite':
    out = expected = src
  else:
    src = str(tmp_path / 'in')
    write_inputs(src)
    Image.new('RGB', (8, 8)).save(os.path.join(src, 'gray.jpg'))
    out, expected = str(tmp_path / 'out'), os.path.join(src, 'gray.png')
  before = snapshot(folder)
  with pytest.raises(predict.PredictError) as e:
    predict.run(wd, src, out)
  message = str(e.value)
  assert message.startswith(f'{expected}: ') and '\n' not in message, message
  assert snapshot(folder) == before
  assert not os.path.exists(tmp_path / 'o.png') and not os.path.exists(
    tmp_path / 'out'
  )


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
  target = tmp_path / 'x.png'
  target.write_bytes(b'old')

  def fail(*args, **kwargs):
    raise KeyboardInterrupt

  # After the PNG is in the temporary file, before it replaces the old one.
  monkeypatch.setattr(os, 'fsync', fail)
  with pytest.raises(KeyboardInterrupt):
    image_io.write_png(str(target), np.zeros((4, 4, 3), np.uint8))
  assert os.listdir(tmp_path) == ['x.png'] and target.read_bytes() == b'old'


def test_cli_error_is_one_line(workdir, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  Image.new('RGB', (8, 8)).save(folder / 'a.png')
  (folder / 'b.png').write_bytes(b'not a png')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'fcn_jax.predict',
      f'--workdir={workdir}',
      f'--input={folder}',
      f'--output={tmp_path / "out"}',
    ],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=120,
  )
  assert proc.returncode != 0
  assert proc.stderr.splitlines() == [
    f'error: {folder / "b.png"}: not an image file'
  ]
  assert not (tmp_path / 'out').exists()


def test_bucket_and_verbose(workdir, inputs, tmp_path, capsys):
  folder, expected = inputs
  out = str(tmp_path / 'out')
  predict.run(workdir, folder, out, progress=False, bucket=24, verbose=True)
  err = capsys.readouterr().err.splitlines()
  assert err[-1].startswith(f'{len(expected)} images, ')
  compiled = [line for line in err if ': compiled 1x24x24x3 in ' in line]
  assert len(compiled) <= 1 and f'{len(compiled)} compilations' in err[-1]
  exact = str(tmp_path / 'exact')
  predict.run(workdir, folder, exact, progress=False)
  diff = [
    np.abs(
      np.asarray(Image.open(os.path.join(out, n)), int)
      - np.asarray(Image.open(os.path.join(exact, n)), int)
    ).max()
    for n in sorted(os.listdir(out))
  ]
  assert sorted(os.listdir(out)) == sorted(os.listdir(exact)) and max(diff) > 0
