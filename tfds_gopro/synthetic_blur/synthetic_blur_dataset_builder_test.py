"""Tests of the `synthetic_blur` builder (on the tiny photos of dummy_data/).

dummy_data/ holds five procedural 48x64 photos, made with
`camera_shake.procedural_photo(np.random.default_rng(i), 48, 64)`, i = 0..4.
"""

import json

from etils import epath
import numpy as np
from PIL import Image
import pytest
from scipy import ndimage
import tensorflow_datasets as tfds

from tfds_gopro import testing
from tfds_gopro.synthetic_blur import camera_shake
from tfds_gopro.synthetic_blur import synthetic_blur_dataset_builder as sb

HERE = sb.Builder.code_path.parent
DUMMY = HERE / 'dummy_data'


def _dummy_config(name: str = 'dummy', **kwargs) -> sb.SyntheticBlurConfig:
  """5 photos of 48x64 -> 3 train, 2 test; 2 crops of 32x48 each."""
  fields = dict(
    source_dir=str(DUMMY),
    crop_height=32,
    crop_width=48,
    crops_per_photo=2,
    test_fraction=0.4,
    max_blur=8.0,
  )
  fields.update(kwargs)
  return sb.SyntheticBlurConfig(name=name, **fields)


class SyntheticBlurTest(
  testing.WritesTFRecord, tfds.testing.DatasetBuilderTestCase
):
  DATASET_CLASS = sb.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = [_dummy_config()]
  SPLITS = {'train': 6, 'test': 4}
  SKIP_CHECKSUMS = True


def _build(data_dir, config, **kwargs) -> sb.Builder:
  builder = sb.Builder(data_dir=data_dir, config=config, **kwargs)
  builder.download_and_prepare()
  return builder


def _examples(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  return _build(tmp_path_factory.mktemp('data'), _dummy_config())


def test_defaults_to_array_record(built):
  assert built.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  files = list(epath.Path(built.data_dir).glob('*.array_record*'))
  assert files


def test_explicit_file_format_is_kept(tmp_path):
  builder = sb.Builder(
    data_dir=tmp_path, config=_dummy_config(), file_format='tfrecord'
  )
  assert builder.info.file_format == tfds.core.FileFormat.TFRECORD


def test_same_seed_same_bytes_other_seed_differs(tmp_path, built):
  def shards(builder):
    files = sorted(epath.Path(builder.data_dir).glob('*.array_record*'))
    return {f.name: f.read_bytes() for f in files}

  again = _build(tmp_path / 'a', _dummy_config())
  assert shards(again) == shards(built)
  other = _build(tmp_path / 'b', _dummy_config(seed=1))
  assert shards(other) != shards(built)


def test_splits_are_disjoint_by_photo(built):
  photos = {
    split: {ex['id'].decode().split('/')[0] for ex in _examples(built, split)}
    for split in ('train', 'test')
  }
  assert len(photos['train']) == 3 and len(photos['test']) == 2
  assert not photos['train'] & photos['test']


def test_folder_with_split_subfolders_and_a_small_photo(tmp_path):
  root = tmp_path / 'photos'
  for split, names in (('train', ('photo0', 'photo1')), ('test', ('photo2',))):
    (root / split).mkdir(parents=True)
    for name in names:
      (root / split / f'{name}.png').write_bytes(
        (DUMMY / f'{name}.png').read_bytes()
      )
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / 'train/tiny.png')
  splits = sb.split_folder(epath.Path(root), _dummy_config())
  assert [key for key, _ in splits['train']] == [
    'train/photo0',
    'train/photo1',
    'train/tiny',
  ]
  assert [key for key, _ in splits['test']] == ['test/photo2']
  builder = _build(tmp_path / 'data', _dummy_config(source_dir=str(root)))
  ids = [ex['id'].decode() for ex in _examples(builder, 'train')]
  assert sorted(ids) == [
    'train/photo0/000',
    'train/photo0/001',
    'train/photo1/000',
    'train/photo1/001',
  ]  # No tiny.
  with pytest.raises(ValueError, match='None of the'):
    _build(
      tmp_path / 'data2', _dummy_config(source_dir=str(root), crop_height=56)
    )


def _laplacian_variance(image: np.ndarray) -> float:
  return float(ndimage.laplace(image.astype(np.float64).mean(axis=-1)).var())


def test_blur_is_real(built):
  for split in ('train', 'test'):
    for ex in _examples(built, split):
      blur, sharp = ex['blur'], ex['sharp']
      assert blur.shape == sharp.shape == (32, 48, 3)
      assert (ex['height'], ex['width']) == (32, 48)
      assert blur.dtype == sharp.dtype == np.uint8
      assert np.abs(blur.astype(int) - sharp).mean() > 2
      assert _laplacian_variance(blur) < 0.6 * _laplacian_variance(sharp)


def test_crop_must_be_multiple_of_8():
  with pytest.raises(ValueError, match='multiple of 8'):
    _dummy_config(crop_height=30)


def test_skimage_photos_load_offline():
  cfg = sb.Builder.BUILDER_CONFIGS[0]
  assert not set(sb.SKIMAGE_TRAIN) & set(sb.SKIMAGE_TEST)
  for name in sb.SKIMAGE_TRAIN + sb.SKIMAGE_TEST:
    photo = camera_shake.fit_photo(
      camera_shake.load_skimage_photo(name), cfg.max_side
    )
    assert photo.dtype == np.uint8 and photo.shape[2] == 3, name
    assert min(photo.shape[:2]) >= cfg.crop_height, name


def test_tfds_build_command_with_json_config(tmp_path):
  """`tfds build <folder> --config='{json}'`, then read back by name."""
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.scripts.cli import main as cli

  config = json.dumps(
    {
      'name': 'mine',
      'source_dir': str(DUMMY),
      'crop_height': 32,
      'crop_width': 48,
      'crops_per_photo': 1,
      'test_fraction': 0.4,
    }
  )
  cli.main(
    cli._parse_flags(
      [  # pylint: disable=protected-access
        'tfds',
        'build',
        str(HERE),
        f'--data_dir={tmp_path}',
        f'--config={config}',
      ]
    )
  )
  source = tfds.data_source(
    'synthetic_blur/mine', split='train', data_dir=tmp_path, download=False
  )
  assert len(source) == 3
  assert source[0]['blur'].shape == (32, 48, 3)
