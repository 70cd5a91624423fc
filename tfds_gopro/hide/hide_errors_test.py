"""Bad manual_dirs end the `hide` build with a clear error, writing nothing."""

import pathlib

import numpy as np

from tfds_gopro import make_dummy_data
from tfds_gopro import paired
from tfds_gopro import testing

_CLOSE_UP = pathlib.Path('test') / 'test-close-ups' / '1fromGOPR1001.png'


original = testing.tree_fixture('hide', 'original')  # manual/HIDE_dataset
flat = testing.tree_fixture('hide', 'flat')  # manual


def _build_fails(tmp_path) -> str:
  """Builds from tmp_path/manual; returns the error, checks nothing is left."""
  return testing.build_fails('hide', tmp_path / 'manual', tmp_path / 'data')


def test_missing_gt_partner(tmp_path, original):
  (original / 'GT' / _CLOSE_UP.name).unlink()
  message = _build_fails(tmp_path)
  assert (
    f'{original / _CLOSE_UP}: missing sharp partner '
    f'(expected {original / "GT" / _CLOSE_UP.name})'
  ) in message


def test_missing_partner_flat(tmp_path, flat):
  (flat / 'test' / 'target' / '1fromGOPR2001.png').unlink()
  message = _build_fails(tmp_path)
  assert f'{flat / "test" / "input" / "1fromGOPR2001.png"}: missing' in message


def test_listed_file_missing(tmp_path, original):
  (original / _CLOSE_UP).unlink()
  message = _build_fails(tmp_path)
  assert f'{original / "test.txt"}: lists {_CLOSE_UP.name}' in message


def test_missing_test_group(tmp_path, original):
  group = original / 'test' / 'test-long-shot'
  for path in group.iterdir():
    path.unlink()
  group.rmdir()
  assert f'{group}: missing folder' in _build_fails(tmp_path)


def test_corrupt_file(tmp_path, original):
  bad = original / 'GT' / '2fromGOPR0001.png'
  bad.write_bytes(bad.read_bytes()[:-30])
  assert f'{bad}: cannot be decoded' in _build_fails(tmp_path)


def test_not_three_channels(tmp_path, flat):
  bad = flat / 'test' / 'input' / '1fromGOPR1001.png'
  make_dummy_data.write_png(bad, np.full((16, 24, 4), 7, np.uint8))
  message = _build_fails(tmp_path)
  assert (
    f'{bad}: expected an 8-bit RGB image (3 channels), got PIL mode \'RGBA\''
  ) in message


def test_shape_mismatch(tmp_path, original):
  sharp = original / 'GT' / _CLOSE_UP.name
  make_dummy_data.write_png(sharp, np.zeros((24, 16, 3), np.uint8))
  message = _build_fails(tmp_path)
  assert f'{original / _CLOSE_UP}: shape mismatch, 16x24x3' in message
  assert f'{sharp} is 24x16x3' in message


def test_unknown_layout(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.write_hide_flat(manual / 'HIDE')  # One level too deep.
  message = _build_fails(tmp_path)
  assert f'{manual}, matches no known layout' in message
  assert '[HIDE_dataset/]{GT,train,test/test-close-ups,' in message
  assert 'test/{input,target}/*.png' in message
  assert 'HIDE/  [test/]' in message
