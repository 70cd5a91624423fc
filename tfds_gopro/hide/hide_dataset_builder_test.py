"""Tests of the `hide` builder on both layouts, from Python and the CLI."""

import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tfds_gopro import make_dummy_data
from tfds_gopro import testing
from tfds_gopro.hide import hide_dataset_builder

_DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
_REPO = pathlib.Path(__file__).resolve().parents[2]
_TEST_IDS = [
  'test-close-ups/1fromGOPR1001',
  'test-close-ups/2fromGOPR1001',
  'test-long-shot/1fromGOPR2001',
]


class HideOriginalTest(tfds.testing.DatasetBuilderTestCase):
  """The HIDE_dataset tree: GT/, train/, test/test-{close-ups,long-shot}/."""

  DATASET_CLASS = hide_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'original')
  SPLITS = {'train': 2, 'test': 3}


class HideFlatTest(testing.WritesTFRecord, tfds.testing.DatasetBuilderTestCase):
  """The flattened test/{input,target} layout, without a train split.

  Written as TFRecord, which TFDS reads itself.
  """

  DATASET_CLASS = hide_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'flat')
  SPLITS = {'test': 2}


def test_data_source_reads_default_array_record(tmp_path):
  """Tree directly in manual_dir; ArrayRecord by default; pixels kept."""
  manual_dir = tmp_path / 'manual'
  make_dummy_data.write_hide_original(manual_dir)
  data_dir = tmp_path / 'data'
  test = tfds.data_source(
    'hide',
    split='test',
    data_dir=data_dir,
    download_and_prepare_kwargs={
      'download_config': (
        tfds.download.DownloadConfig(manual_dir=str(manual_dir))
      )
    },
  )
  builder = tfds.builder('hide', data_dir=data_dir)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert testing.ids(test) == _TEST_IDS
  for example in test:
    sharp = make_dummy_data.sharp_image(example['id'].decode().split('/')[-1])
    np.testing.assert_array_equal(example['sharp'], sharp)
    assert (example['height'], example['width']) == sharp.shape[:2]
    np.testing.assert_array_equal(
      example['blur'], make_dummy_data.blur_image(sharp)
    )
  train = tfds.data_source('hide', split='train', data_dir=data_dir)
  assert testing.ids(train) == ['1fromGOPR0001', '2fromGOPR0001']


def test_flat_layout_ids(tmp_path):
  builder = tfds.builder('hide', data_dir=tmp_path)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=str(_DUMMY / 'flat')
    )
  )
  assert list(builder.info.splits) == ['test']
  assert testing.ids(
    tfds.data_source('hide', split='test', data_dir=tmp_path)
  ) == [
    '1fromGOPR1001',
    '1fromGOPR2001',
  ]


def test_tfds_load(tmp_path):
  """`tfds.load` prepares as ArrayRecord and reads it; TFRecord too."""
  dl_kwargs = {
    'download_config': tfds.download.DownloadConfig(
      manual_dir=str(_DUMMY / 'original')
    )
  }
  ds = tfds.load(
    'hide',
    split='test',
    data_dir=tmp_path / 'array_record',
    download_and_prepare_kwargs=dl_kwargs,
  )
  examples = list(tfds.as_numpy(ds))
  assert sorted(e['id'].decode() for e in examples) == _TEST_IDS
  original = _DUMMY / 'original' / 'HIDE_dataset'
  for example in examples:
    group, stem = example['id'].decode().split('/')
    np.testing.assert_array_equal(
      example['blur'], Image.open(original / 'test' / group / f'{stem}.png')
    )
    np.testing.assert_array_equal(
      example['sharp'], Image.open(original / 'GT' / f'{stem}.png')
    )
  for file_format in ('array_record', 'tfrecord'):
    ds = tfds.load(
      'hide',
      split='test',
      data_dir=tmp_path / file_format,
      as_supervised=True,
      builder_kwargs={'file_format': file_format},
      download_and_prepare_kwargs=dl_kwargs,
    )
    pairs = list(tfds.as_numpy(ds))
    assert len(pairs) == 3
    assert all(b.shape == s.shape == (16, 24, 3) for b, s in pairs)


@pytest.mark.parametrize('from_repo_root', [False, True])
def test_tfds_build_command(tmp_path, from_repo_root):
  """The `tfds build` executable, run outside the repository or at its root."""
  if from_repo_root:
    path, cwd, layout = 'tfds_gopro/hide', _REPO, 'flat'
    ids = ['1fromGOPR1001', '1fromGOPR2001']
  else:
    # The repository root is then neither the cwd nor on the executable's
    # sys.path: `tfds_gopro` comes from the installed package (pip install -e).
    path, cwd, layout = str(_REPO / 'tfds_gopro' / 'hide'), tmp_path, 'original'
    ids = _TEST_IDS
  result = testing.tfds_build(
    path, f'--manual_dir={_DUMMY / layout}', f'--data_dir={tmp_path}', cwd=cwd
  )
  assert result.returncode == 0, result.stderr[-5000:]
  source = tfds.data_source('hide', split='test', data_dir=tmp_path)
  assert testing.ids(source) == ids
  ds = tfds.load('hide', split='test', data_dir=tmp_path)
  assert [e['id'] for e in tfds.as_numpy(ds)] == [e['id'] for e in source]


def test_dummy_data_matches_generator(tmp_path):
  """The committed dummy_data is what make_dummy_data.py writes."""
  testing.write_tree('hide', 'original', tmp_path / 'original')
  testing.write_tree('hide', 'flat', tmp_path / 'flat')
  testing.assert_same_tree(tmp_path, _DUMMY)
