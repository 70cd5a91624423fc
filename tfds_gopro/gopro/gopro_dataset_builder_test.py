"""Tests of the `gopro` builder on both layouts, from Python and the CLI."""

import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tfds_gopro import make_dummy_data
from tfds_gopro import testing
from tfds_gopro.gopro import gopro_dataset_builder

_DUMMY = pathlib.Path(__file__).resolve().parent / 'dummy_data'
_REPO = pathlib.Path(__file__).resolve().parents[2]
_ORIGINAL_IDS = {
  'train': [
    'GOPR0001_00_00/000001',
    'GOPR0001_00_00/000002',
    'GOPR0002_00_00/000001',
  ],
  'test': ['GOPR0003_00_00/000001', 'GOPR0003_00_00/000002'],
}


class GoproOriginalTest(tfds.testing.DatasetBuilderTestCase):
  """The GOPRO_Large tree, both configs; ArrayRecord read by `as_dataset()`."""

  DATASET_CLASS = gopro_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'original')
  SPLITS = {'train': 3, 'test': 2}


class GoproFlatTest(
  testing.WritesTFRecord, tfds.testing.DatasetBuilderTestCase
):
  """The flattened {train,test}/{input,target} layout, written as TFRecord."""

  DATASET_CLASS = gopro_dataset_builder.Builder
  EXAMPLE_DIR = str(_DUMMY / 'flat')
  BUILDER_CONFIG_NAMES_TO_TEST = ['blur']
  SPLITS = {'train': 3, 'test': 2}


def _download_config(manual_dir):
  return tfds.download.DownloadConfig(manual_dir=str(manual_dir))


def test_data_source_reads_default_array_record(tmp_path):
  """Tree directly in manual_dir; ArrayRecord by default; pixels kept."""
  manual_dir = tmp_path / 'manual'
  make_dummy_data.write_gopro_original(manual_dir)
  data_dir = tmp_path / 'data'
  for config, gamma in (('blur', 1.0), ('blur_gamma', 2.2)):
    test = tfds.data_source(
      f'gopro/{config}',
      split='test',
      data_dir=data_dir,
      download_and_prepare_kwargs={
        'download_config': _download_config(manual_dir)
      },
    )
    builder = tfds.builder(f'gopro/{config}', data_dir=data_dir)
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert list(builder.data_path.glob('gopro-test.array_record*'))
    assert testing.ids(test) == _ORIGINAL_IDS['test']
    for example in test:
      sharp = make_dummy_data.sharp_image(example['id'].decode())
      np.testing.assert_array_equal(example['sharp'], sharp)
      assert (example['height'], example['width']) == sharp.shape[:2]
      np.testing.assert_array_equal(
        example['blur'], make_dummy_data.blur_image(sharp, gamma)
      )
  train = tfds.data_source('gopro', split='train', data_dir=data_dir)
  assert testing.ids(train) == _ORIGINAL_IDS['train']


def test_flat_layout_ids(tmp_path):
  tfds.builder('gopro', data_dir=tmp_path).download_and_prepare(
    download_config=_download_config(_DUMMY / 'flat')
  )
  assert (
    testing.ids(tfds.data_source('gopro', split='train', data_dir=tmp_path))
    == (_ORIGINAL_IDS['train'])
  )
  # A name without `-<frame>` gives the file stem.
  assert testing.ids(
    tfds.data_source('gopro', split='test', data_dir=tmp_path)
  ) == [
    'GOPR0003_00_00/000001',
    'GOPR0003_00_00_000002',
  ]


def _original_png(example_id, folder):
  scene, frame = example_id.split('/')
  for split in ('train', 'test'):
    path = _DUMMY / 'original' / 'GOPRO_Large' / split / scene / folder
    if path.is_dir():
      return np.asarray(Image.open(path / f'{frame}.png'))
  raise FileNotFoundError(example_id)


def test_tfds_load_reads_array_record(tmp_path):
  """`tfds.load` prepares as ArrayRecord, then reads it as a tf.data.Dataset."""
  dl_kwargs = {'download_config': _download_config(_DUMMY / 'original')}
  for split, ids in _ORIGINAL_IDS.items():
    ds = tfds.load(
      'gopro',
      split=split,
      data_dir=tmp_path,
      download_and_prepare_kwargs=dl_kwargs,
    )
    assert ds.cardinality() == len(ids)
    examples = list(tfds.as_numpy(ds))
    assert sorted(e['id'].decode() for e in examples) == ids
    for example in examples:
      example_id = example['id'].decode()
      assert example['blur'].shape == example['sharp'].shape == (16, 24, 3)
      np.testing.assert_array_equal(
        example['blur'], _original_png(example_id, 'blur')
      )
      np.testing.assert_array_equal(
        example['sharp'], _original_png(example_id, 'sharp')
      )
    pairs = list(
      tfds.as_numpy(
        tfds.load('gopro', split=split, data_dir=tmp_path, as_supervised=True)
      )
    )
    assert len(pairs) == len(ids)
    for (blur, sharp), example in zip(pairs, examples):
      np.testing.assert_array_equal(blur, example['blur'])
      np.testing.assert_array_equal(sharp, example['sharp'])
    # Same examples, in the same (stored) order, as the random-access source.
    source = tfds.data_source('gopro', split=split, data_dir=tmp_path)
    assert [e['id'] for e in source] == [e['id'] for e in examples]
    np.testing.assert_array_equal(source[0]['blur'], examples[0]['blur'])
  builder = tfds.builder('gopro', data_dir=tmp_path)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert not list(builder.data_path.glob('*.tfrecord*'))


def test_tfds_load_tfrecord(tmp_path):
  """TFRecord, when asked for, is read by TFDS's own reader."""
  ds = tfds.load(
    'gopro',
    split='train',
    data_dir=tmp_path,
    as_supervised=True,
    builder_kwargs={'file_format': 'tfrecord'},
    download_and_prepare_kwargs={
      'download_config': (_download_config(_DUMMY / 'original'))
    },
  )
  pairs = list(tfds.as_numpy(ds))
  assert len(pairs) == 3
  assert all(b.shape == s.shape == (16, 24, 3) for b, s in pairs)
  # A prepared dataset keeps its format when reopened without `file_format`.
  reopened = tfds.builder('gopro', data_dir=tmp_path)
  assert reopened.info.file_format == tfds.core.FileFormat.TFRECORD


@pytest.mark.parametrize('from_repo_root', [False, True])
def test_tfds_build_command(tmp_path, from_repo_root):
  """The `tfds build` executable, run outside the repository or at its root."""
  if from_repo_root:
    # The flattened copy, as the README says (no --config): `blur` is built,
    # `blur_gamma` (not in this layout) skipped with a warning.
    args, cwd, configs = ['tfds_gopro/gopro'], _REPO, ['blur']
    manual_dir = _DUMMY / 'flat'
  else:
    # The repository root is then neither the cwd nor on the executable's
    # sys.path: `tfds_gopro` comes from the installed package (pip install -e).
    args, cwd = [str(_REPO / 'tfds_gopro' / 'gopro')], tmp_path
    configs, manual_dir = ['blur', 'blur_gamma'], _DUMMY / 'original'
  result = testing.tfds_build(
    *args, f'--manual_dir={manual_dir}', f'--data_dir={tmp_path}', cwd=cwd
  )
  assert result.returncode == 0, result.stderr[-5000:]
  for config in configs:
    builder = tfds.builder(f'gopro/{config}', data_dir=tmp_path)
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    source = tfds.data_source(
      f'gopro/{config}', split='train', data_dir=tmp_path
    )
    assert testing.ids(source) == _ORIGINAL_IDS['train']
    ds = tfds.load(f'gopro/{config}', split='train', data_dir=tmp_path)
    assert [e['id'] for e in tfds.as_numpy(ds)] == [e['id'] for e in source]
  if from_repo_root:
    assert 'Skipped gopro/blur_gamma/1.1.0: manual_dir' in (
      result.stdout + result.stderr
    )
    assert not tfds.builder('gopro/blur_gamma', data_dir=tmp_path).is_prepared()
    assert sorted(p.name for p in (tmp_path / 'gopro').iterdir()) == [
      '.config',
      'blur',
    ]


def test_dummy_data_matches_generator(tmp_path):
  """The committed dummy_data is what make_dummy_data.py writes."""
  testing.write_tree('gopro', 'original', tmp_path / 'original')
  testing.write_tree('gopro', 'flat', tmp_path / 'flat')
  testing.assert_same_tree(tmp_path, _DUMMY)
