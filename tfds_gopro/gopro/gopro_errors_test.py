"""Bad manual_dirs end the `gopro` build with a clear error, writing nothing."""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_gopro import make_dummy_data
from tfds_gopro import paired
from tfds_gopro import testing
from tfds_gopro.gopro import gopro_dataset_builder

_SCENE = pathlib.Path('train') / 'GOPR0001_00_00'


original = testing.tree_fixture('gopro', 'original')  # manual/GOPRO_Large
flat = testing.tree_fixture('gopro', 'flat')  # manual


def _build_fails(tmp_path, config='blur') -> str:
  """Builds from tmp_path/manual; returns the error, checks nothing is left."""
  return testing.build_fails(
    f'gopro/{config}', tmp_path / 'manual', tmp_path / 'data'
  )


@pytest.mark.parametrize('missing', ['sharp', 'blur'])
def test_missing_partner_original(tmp_path, original, missing):
  (original / _SCENE / missing / '000002.png').unlink()
  partner = 'blur' if missing == 'sharp' else 'sharp'
  message = _build_fails(tmp_path)
  assert str(original / _SCENE / partner / '000002.png') in message
  assert str(original / _SCENE / missing / '000002.png') in message  # Expected.


def test_missing_partner_flat(tmp_path, flat):
  name = 'GOPR0003_00_00-000001.png'
  (flat / 'test' / 'input' / name).unlink()
  message = _build_fails(tmp_path)
  target = flat / 'test' / 'target' / name
  assert f'{target}: missing blurred partner' in message


def test_missing_split(tmp_path, flat):
  for folder in ('input', 'target'):
    for path in (flat / 'train' / folder).iterdir():
      path.unlink()
    (flat / 'train' / folder).rmdir()
  message = _build_fails(tmp_path)
  assert f'{flat / "train" / "input"}: missing folder' in message


def test_missing_scene_folder(tmp_path, original):
  sharp = original / 'test' / 'GOPR0003_00_00' / 'sharp'
  for path in sharp.iterdir():
    path.unlink()
  sharp.rmdir()
  assert f'{sharp}: missing folder' in _build_fails(tmp_path)


@pytest.mark.parametrize('content', [b'not a png at all', 'truncated'])
def test_corrupt_file(tmp_path, original, content):
  bad = original / 'test' / 'GOPR0003_00_00' / 'blur' / '000002.png'
  if content == 'truncated':
    content = bad.read_bytes()[:-30]  # Cuts the pixel data short.
  bad.write_bytes(content)
  message = _build_fails(tmp_path)
  assert f'{bad}: cannot be decoded' in message


def test_all_problems_are_listed_and_nothing_generated(
  tmp_path, original, monkeypatch
):
  generated = []
  original_generate = gopro_dataset_builder.Builder._generate_examples

  def spy(self, pairs):
    for key, example in original_generate(self, pairs):
      generated.append(key)
      yield key, example

  monkeypatch.setattr(gopro_dataset_builder.Builder, '_generate_examples', spy)
  bad = [
    original / _SCENE / 'sharp' / '000001.png',
    original / 'test' / 'GOPR0003_00_00' / 'blur' / '000002.png',
  ]
  for path in bad:
    path.write_bytes(b'garbage')
  message = _build_fails(tmp_path)
  assert message.startswith('2 problem(s)')
  for path in bad:
    assert str(path) in message
  assert not generated  # Validation ran before any example was written.


@pytest.mark.parametrize('shape', [(16, 24), (16, 24, 4), (16, 24, 2)])
def test_not_three_channels(tmp_path, original, shape):
  bad = original / _SCENE / 'blur' / '000001.png'
  make_dummy_data.write_png(bad, np.full(shape, 128, np.uint8))
  message = _build_fails(tmp_path)
  assert f'{bad}: expected an 8-bit RGB image (3 channels)' in message


def test_shape_mismatch(tmp_path, flat):
  blur = flat / 'train' / 'input' / 'GOPR0002_00_00-000001.png'
  sharp = flat / 'train' / 'target' / 'GOPR0002_00_00-000001.png'
  make_dummy_data.write_png(sharp, np.zeros((16, 20, 3), np.uint8))
  message = _build_fails(tmp_path)
  assert f'{blur}: shape mismatch, 16x24x3' in message
  assert f'{sharp} is 16x20x3' in message


def test_unknown_layout(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.write_png(
    manual / 'images' / 'a.png', make_dummy_data.sharp_image('a')
  )
  (manual / 'readme.txt').write_text('hello')
  message = _build_fails(tmp_path)
  assert f'{manual}, matches no known layout' in message
  assert '{train,test}/<scene>/{blur,blur_gamma,sharp}/*.png' in message
  assert '{train,test}/{input,target}/*.png' in message
  assert 'images/  [a.png]' in message and 'readme.txt' in message


def test_duplicate_id(tmp_path, flat):
  for folder in ('input', 'target'):
    src = flat / 'test' / folder / 'GOPR0003_00_00-000001.png'
    (src.parent / 'GOPR0003_00_00-000001.PNG').write_bytes(src.read_bytes())
  message = _build_fails(tmp_path)
  assert "id 'GOPR0003_00_00/000001' also used by" in message


def test_two_layouts(tmp_path, original):
  make_dummy_data.write_gopro_flat(tmp_path / 'manual')
  message = _build_fails(tmp_path)
  assert 'matches several layouts' in message
  assert f'original GOPRO_Large tree in {original}' in message


def test_blur_gamma_is_skipped_on_the_flat_layout(tmp_path, flat, caplog):
  """Nothing written, a warning naming manual_dir; `blur` still builds."""
  data_dir = tmp_path / 'data'
  config = tfds.download.DownloadConfig(manual_dir=str(flat))
  tfds.builder('gopro/blur_gamma', data_dir=data_dir).download_and_prepare(
    download_config=config
  )
  assert 'Skipped gopro/blur_gamma/1.1.0' in caplog.text
  assert f'manual_dir {flat} holds the flattened layout' in caplog.text
  assert not tfds.builder('gopro/blur_gamma', data_dir=data_dir).is_prepared()
  assert not data_dir.exists() or not list(data_dir.rglob('*'))
  tfds.builder('gopro/blur', data_dir=data_dir).download_and_prepare(
    download_config=config
  )
  assert tfds.builder('gopro/blur', data_dir=data_dir).is_prepared()
