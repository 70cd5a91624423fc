"""Tests of the `hide` builder on both layouts, from Python and the CLI."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from tfds_gopro import make_dummy_data
from tfds_gopro.hide import hide_dataset_builder

_DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
_REPO = pathlib.Path(__file__).resolve().parents[2]
# What `tfds build` runs, without the `tfds` executable (see README.md).
_TFDS_BUILD = (
    'import sys; from tensorflow_datasets.scripts.cli import build, cli_utils; '
    "cli_utils.make_flags_parser(build.Args, 'tfds build')(sys.argv).execute()")
_TEST_IDS = ['test-close-ups/1fromGOPR1001', 'test-close-ups/2fromGOPR1001',
             'test-long-shot/1fromGOPR2001']


class _TFRecordHarness:
  """Builds as TFRecord: the TFDS test harness reads with `as_dataset()`."""

  def _make_builder(self, config=None):
    return self.dataset_class(data_dir=self.tmp_dir, config=config,
                              version=self.VERSION, file_format='tfrecord')


class HideOriginalTest(_TFRecordHarness, tfds.testing.DatasetBuilderTestCase):
  """The HIDE_dataset tree: GT/, train/, test/test-{close-ups,long-shot}/."""

  DATASET_CLASS = hide_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'original')
  SPLITS = {'train': 2, 'test': 3}


class HideFlatTest(_TFRecordHarness, tfds.testing.DatasetBuilderTestCase):
  """The flattened test/{input,target} layout, without a train split."""

  DATASET_CLASS = hide_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'flat')
  SPLITS = {'test': 2}


def _ids(source):
  return sorted(example['id'].decode() for example in source)


def test_data_source_reads_default_array_record(tmp_path):
  """Tree directly in manual_dir; ArrayRecord by default; pixels kept."""
  manual_dir = tmp_path / 'manual'
  make_dummy_data.write_hide_original(manual_dir)
  data_dir = tmp_path / 'data'
  test = tfds.data_source(
      'hide', split='test', data_dir=data_dir,
      download_and_prepare_kwargs={'download_config': (
          tfds.download.DownloadConfig(manual_dir=str(manual_dir)))})
  builder = tfds.builder('hide', data_dir=data_dir)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert _ids(test) == _TEST_IDS
  for example in test:
    sharp = make_dummy_data.sharp_image(example['id'].decode().split('/')[-1])
    np.testing.assert_array_equal(example['sharp'], sharp)
    np.testing.assert_array_equal(example['blur'],
                                  make_dummy_data.blur_image(sharp))
  train = tfds.data_source('hide', split='train', data_dir=data_dir)
  assert _ids(train) == ['1fromGOPR0001', '2fromGOPR0001']


def test_flat_layout_ids(tmp_path):
  builder = tfds.builder('hide', data_dir=tmp_path)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(_DUMMY / 'flat')))
  assert list(builder.info.splits) == ['test']
  assert _ids(tfds.data_source('hide', split='test', data_dir=tmp_path)) == [
      '1fromGOPR1001', '1fromGOPR2001']


def test_tfds_load(tmp_path):
  ds = tfds.load('hide', split='test', data_dir=tmp_path, as_supervised=True,
                 builder_kwargs={'file_format': 'tfrecord'},
                 download_and_prepare_kwargs={'download_config': (
                     tfds.download.DownloadConfig(
                         manual_dir=str(_DUMMY / 'original')))})
  pairs = list(tfds.as_numpy(ds))
  assert len(pairs) == 3
  assert all(b.shape == s.shape == (16, 24, 3) for b, s in pairs)


def test_tfds_build_command(tmp_path):
  """`tfds build tfds_gopro/hide`, as ArrayRecord."""
  # Run from outside the repository, like the `tfds` executable, whose
  # sys.path does not hold the repository root.
  result = subprocess.run(
      [sys.executable, '-c', _TFDS_BUILD, str(_REPO / 'tfds_gopro' / 'hide'),
       f'--manual_dir={_DUMMY / "original"}', f'--data_dir={tmp_path}'],
      cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  assert _ids(tfds.data_source('hide', split='test', data_dir=tmp_path)) == (
      _TEST_IDS)


def _tree(root):
  return sorted(str(p.relative_to(root)) for p in root.rglob('*')
                if p.is_file())


def test_dummy_data_matches_generator(tmp_path):
  """The committed dummy_data is what make_dummy_data.py writes."""
  make_dummy_data.write_hide_original(tmp_path / 'original' / 'HIDE_dataset')
  make_dummy_data.write_hide_flat(tmp_path / 'flat')
  assert _tree(tmp_path) == _tree(_DUMMY)
  for name in _tree(tmp_path):
    if name.endswith('.png'):
      np.testing.assert_array_equal(Image.open(tmp_path / name),
                                    Image.open(_DUMMY / name), err_msg=name)
    else:
      assert (tmp_path / name).read_text() == (_DUMMY / name).read_text()
