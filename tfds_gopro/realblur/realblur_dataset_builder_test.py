"""The `realblur` builder on small trees laid out like the real one."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tfds_gopro import paired
from tfds_gopro.realblur import dummy_tree
from tfds_gopro.realblur import realblur_dataset_builder as rb


def _prepare(manual_dir, data_dir, config):
  builder = tfds.builder(f'realblur/{config}', data_dir=data_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def _check_every_pair_once(data_dir, config, splits=('train', 'test')):
  for split in splits:
    source = tfds.data_source(
      f'realblur/{config}', split=split, data_dir=data_dir
    )
    examples = list(source)
    ids = [e['id'].decode() for e in examples]
    assert sorted(ids) == dummy_tree.ids(split)  # Each listed pair, once.
    for example, example_id in zip(examples, ids):
      sharp = dummy_tree.sharp_image(example_id, config)
      np.testing.assert_array_equal(example['sharp'], sharp)
      np.testing.assert_array_equal(
        example['blur'], dummy_tree.blur_image(sharp, example_id)
      )
      assert (example['height'], example['width']) == sharp.shape[:2]


@pytest.mark.parametrize('config', ['j', 'r'])
def test_original_tree(tmp_path, config):
  """The archive in manual_dir/RealBlur, both list files beside its folders."""
  dummy_tree.write_original(tmp_path / 'manual' / 'RealBlur', config)
  builder = _prepare(tmp_path / 'manual', tmp_path / 'data', config)
  assert builder.info.splits['train'].num_examples == 3
  assert builder.info.splits['test'].num_examples == 3
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  _check_every_pair_once(tmp_path / 'data', config)


def test_both_sets_side_by_side(tmp_path):
  """J and R extracted together: each config reads its own list and folder."""
  dummy_tree.write_original(tmp_path / 'manual', 'j')
  dummy_tree.write_original(tmp_path / 'manual', 'r')
  for config in ('j', 'r'):
    _prepare(tmp_path / 'manual', tmp_path / 'data', config)
    _check_every_pair_once(tmp_path / 'data', config)


def test_flattened_copy(tmp_path):
  dummy_tree.write_flat(tmp_path / 'manual' / 'RealBlur_J')
  _prepare(tmp_path / 'manual', tmp_path / 'data', 'j')
  _check_every_pair_once(tmp_path / 'data', 'j')


def test_flattened_test_split_only(tmp_path):
  """The copies for GoPro-trained evaluation have only test/."""
  dummy_tree.write_flat(tmp_path / 'manual')
  for folder in ('input', 'target'):
    for path in (tmp_path / 'manual' / 'train' / folder).iterdir():
      path.unlink()
    (tmp_path / 'manual' / 'train' / folder).rmdir()
  (tmp_path / 'manual' / 'train').rmdir()
  builder = _prepare(tmp_path / 'manual', tmp_path / 'data', 'j')
  assert list(builder.info.splits) == ['test']
  _check_every_pair_once(tmp_path / 'data', 'j', splits=('test',))


def test_tfds_build_command(tmp_path):
  """`tfds build tfds_gopro/realblur --config=j|r`, run at the repository root."""
  dummy_tree.write_original(tmp_path / 'manual', 'j')
  dummy_tree.write_original(tmp_path / 'manual', 'r')
  tfds_command = os.path.join(os.path.dirname(sys.executable), 'tfds')
  for config in ('j', 'r'):
    result = subprocess.run(
      [
        tfds_command,
        'build',
        'tfds_gopro/realblur',
        f'--config={config}',
        f'--manual_dir={tmp_path / "manual"}',
        f'--data_dir={tmp_path / "data"}',
      ],
      cwd=pathlib.Path(__file__).resolve().parents[2],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_every_pair_once(tmp_path / 'data', config)


def _build_fails(tmp_path, config='j') -> str:
  data_dir = tmp_path / 'data'
  with pytest.raises(paired.DatasetLayoutError) as error:
    _prepare(tmp_path / 'manual', data_dir, config)
  reopened = tfds.builder(f'realblur/{config}', data_dir=data_dir)
  assert not reopened.is_prepared()
  assert not reopened.data_path.exists()
  return str(error.value)


_SET = rb._SETS['j'].folder  # pylint: disable=protected-access


@pytest.mark.parametrize('which', ['gt', 'blur'])
def test_missing_listed_file(tmp_path, which):
  dummy_tree.write_original(tmp_path / 'manual')
  path = tmp_path / 'manual' / _SET / 'scene002' / which / f'{which}_10.png'
  path.unlink()
  message = _build_fails(tmp_path)
  assert f'{path}: missing file (listed in ' in message
  assert 'RealBlur_J_test_list.txt, line 3' in message
  assert message.startswith('1 problem(s)')


@pytest.mark.parametrize('content', [b'not a png at all', 'truncated'])
def test_corrupt_file(tmp_path, content):
  dummy_tree.write_original(tmp_path / 'manual')
  path = tmp_path / 'manual' / _SET / 'scene001' / 'blur' / 'blur_2.png'
  if content == 'truncated':
    content = path.read_bytes()[:-40]
  path.write_bytes(content)
  message = _build_fails(tmp_path)
  assert f'{path}: ' in message and 'nothing was written' in message


def test_grayscale_file(tmp_path):
  dummy_tree.write_original(tmp_path / 'manual')
  path = tmp_path / 'manual' / _SET / 'scene003' / 'gt' / 'gt_1.png'
  Image.open(path).convert('L').save(path)
  assert f'{path}: expected an 8-bit RGB image' in _build_fails(tmp_path)


def test_missing_list_file(tmp_path):
  dummy_tree.write_original(tmp_path / 'manual')
  listing = tmp_path / 'manual' / 'RealBlur_J_train_list.txt'
  listing.unlink()
  assert f'{listing}: missing list file' in _build_fails(tmp_path)


def test_malformed_line(tmp_path):
  dummy_tree.write_original(tmp_path / 'manual')
  listing = tmp_path / 'manual' / 'RealBlur_J_test_list.txt'
  listing.write_text(listing.read_text() + '\nonly_one_path.png')
  assert f'{listing}, line 4: expected' in _build_fails(tmp_path)


def test_wrong_set(tmp_path):
  """RealBlur-R only in manual_dir: config j names what it expected."""
  dummy_tree.write_original(tmp_path / 'manual', 'r')
  message = _build_fails(tmp_path, 'j')
  assert 'matches no known layout' in message
  assert 'RealBlur_J_{train,test}_list.txt' in message


def test_flat_ids():
  assert rb._flat_id(rb.epath.Path('scene230_7.png')) == 'scene230/7'  # pylint: disable=protected-access
  assert rb._flat_id(rb.epath.Path('scene244_reflect-03.png')) == (  # pylint: disable=protected-access
    'scene244_reflect/3'
  )
  assert rb._flat_id(rb.epath.Path('0001.png')) == '0001'  # pylint: disable=protected-access
