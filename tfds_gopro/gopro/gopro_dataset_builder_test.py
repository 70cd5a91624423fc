"""Tests of the `gopro` builder on both layouts, from Python and the CLI."""

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tfds_gopro import make_dummy_data
from tfds_gopro.gopro import gopro_dataset_builder

_DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
_REPO = pathlib.Path(__file__).resolve().parents[2]
# What `tfds build` runs, without the `tfds` executable (see README.md).
_TFDS_BUILD = (
    'import sys; from tensorflow_datasets.scripts.cli import build, cli_utils; '
    "cli_utils.make_flags_parser(build.Args, 'tfds build')(sys.argv).execute()")
_ORIGINAL_IDS = {
    'train': ['GOPR0001_00_00/000001', 'GOPR0001_00_00/000002',
              'GOPR0002_00_00/000001'],
    'test': ['GOPR0003_00_00/000001', 'GOPR0003_00_00/000002'],
}


class _TFRecordHarness:
  """Builds as TFRecord: the TFDS test harness reads with `as_dataset()`."""

  def _make_builder(self, config=None):
    return self.dataset_class(data_dir=self.tmp_dir, config=config,
                              version=self.VERSION, file_format='tfrecord')


class GoproOriginalTest(_TFRecordHarness, tfds.testing.DatasetBuilderTestCase):
  """The GOPRO_Large tree, both configs."""

  DATASET_CLASS = gopro_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'original')
  SPLITS = {'train': 3, 'test': 2}


class GoproFlatTest(_TFRecordHarness, tfds.testing.DatasetBuilderTestCase):
  """The flattened {train,test}/{input,target} layout."""

  DATASET_CLASS = gopro_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'flat')
  BUILDER_CONFIG_NAMES_TO_TEST = ['blur']
  SPLITS = {'train': 3, 'test': 2}


def _download_config(manual_dir):
  return tfds.download.DownloadConfig(manual_dir=str(manual_dir))


def _ids(source):
  return sorted(example['id'].decode() for example in source)


def test_data_source_reads_default_array_record(tmp_path):
  """Tree directly in manual_dir; ArrayRecord by default; pixels kept."""
  manual_dir = tmp_path / 'manual'
  make_dummy_data.write_gopro_original(manual_dir)
  data_dir = tmp_path / 'data'
  for config, gamma in (('blur', 1.0), ('blur_gamma', 2.2)):
    test = tfds.data_source(
        f'gopro/{config}', split='test', data_dir=data_dir,
        download_and_prepare_kwargs={
            'download_config': _download_config(manual_dir)})
    builder = tfds.builder(f'gopro/{config}', data_dir=data_dir)
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert list(builder.data_path.glob('gopro-test.array_record*'))
    assert _ids(test) == _ORIGINAL_IDS['test']
    for example in test:
      sharp = make_dummy_data.sharp_image(example['id'].decode())
      np.testing.assert_array_equal(example['sharp'], sharp)
      np.testing.assert_array_equal(example['blur'],
                                    make_dummy_data.blur_image(sharp, gamma))
  train = tfds.data_source('gopro', split='train', data_dir=data_dir)
  assert _ids(train) == _ORIGINAL_IDS['train']


def test_flat_layout_ids(tmp_path):
  tfds.builder('gopro', data_dir=tmp_path).download_and_prepare(
      download_config=_download_config(_DUMMY / 'flat'))
  assert _ids(tfds.data_source('gopro', split='train', data_dir=tmp_path)) == (
      _ORIGINAL_IDS['train'])
  # A name without `-<frame>` gives the file stem.
  assert _ids(tfds.data_source('gopro', split='test', data_dir=tmp_path)) == [
      'GOPR0003_00_00/000001', 'GOPR0003_00_00_000002']


def test_tfds_load(tmp_path):
  """`tfds.load` builds; reading needs TFRecord (or `tfds.data_source`)."""
  dl_kwargs = {'download_config': _download_config(_DUMMY / 'original')}
  ds = tfds.load('gopro', split='train', data_dir=tmp_path / 'tfrecord',
                 as_supervised=True,
                 builder_kwargs={'file_format': 'tfrecord'},
                 download_and_prepare_kwargs=dl_kwargs)
  pairs = list(tfds.as_numpy(ds))
  assert len(pairs) == 3
  assert all(b.shape == s.shape == (16, 24, 3) for b, s in pairs)
  # A prepared dataset keeps its format when reopened without `file_format`.
  reopened = tfds.builder('gopro', data_dir=tmp_path / 'tfrecord')
  assert reopened.info.file_format == tfds.core.FileFormat.TFRECORD

  # With the default (ArrayRecord), `tfds.load` builds the dataset, then TFDS
  # 4.9.10 cannot make a tf.data.Dataset of it: `tfds.data_source` reads it.
  data_dir = tmp_path / 'array_record'
  with pytest.raises(NotImplementedError, match='as_data_source'):
    tfds.load('gopro', split='test', data_dir=data_dir,
              download_and_prepare_kwargs=dl_kwargs)
  assert tfds.builder('gopro', data_dir=data_dir).is_prepared()
  assert len(tfds.data_source('gopro', split='test', data_dir=data_dir)) == 2


def test_tfds_build_command(tmp_path):
  """`tfds build tfds_gopro/gopro`: builds every config, as ArrayRecord."""
  # Run from outside the repository, like the `tfds` executable, whose
  # sys.path does not hold the repository root.
  result = subprocess.run(
      [sys.executable, '-c', _TFDS_BUILD, str(_REPO / 'tfds_gopro' / 'gopro'),
       f'--manual_dir={_DUMMY / "original"}', f'--data_dir={tmp_path}'],
      cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  for config in ('blur', 'blur_gamma'):
    test = tfds.data_source(f'gopro/{config}', split='test', data_dir=tmp_path)
    assert _ids(test) == _ORIGINAL_IDS['test']


@pytest.mark.skipif(
    importlib.util.find_spec('apache_beam') is None,
    reason='the tfds executable of TFDS 4.9.10 needs apache_beam')
def test_tfds_executable(tmp_path):
  tfds_cli = pathlib.Path(sys.executable).parent / 'tfds'
  result = subprocess.run(
      [str(tfds_cli), 'build', 'tfds_gopro/gopro', '--config=blur',
       f'--manual_dir={_DUMMY / "flat"}', f'--data_dir={tmp_path}'],
      cwd=_REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  assert len(tfds.data_source('gopro', split='train', data_dir=tmp_path)) == 3


def _tree(root):
  return sorted(str(p.relative_to(root)) for p in root.rglob('*')
                if p.is_file())


def test_dummy_data_matches_generator(tmp_path):
  """The committed dummy_data is what make_dummy_data.py writes."""
  make_dummy_data.write_gopro_original(tmp_path / 'original' / 'GOPRO_Large')
  make_dummy_data.write_gopro_flat(tmp_path / 'flat')
  assert _tree(tmp_path) == _tree(_DUMMY)
  for name in _tree(tmp_path):
    if name.endswith('.png'):
      np.testing.assert_array_equal(Image.open(tmp_path / name),
                                    Image.open(_DUMMY / name), err_msg=name)
