"""Tests of `as_dataset()` on ArrayRecord files (`ArrayRecordDatasetMixin`)."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_gopro import array_record_dataset
from tfds_gopro import paired
from tfds_gopro.gopro import gopro_dataset_builder

_MANUAL_DIR = (
  pathlib.Path(__file__).resolve().parent / 'gopro' / 'dummy_data' / 'original'
)


@pytest.fixture(scope='module', name='builder')
def _builder(tmp_path_factory):
  builder = gopro_dataset_builder.Builder(
    data_dir=tmp_path_factory.mktemp('data')
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(_MANUAL_DIR))
  )
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  return builder


def _ids(ds):
  return [example['id'].decode() for example in tfds.as_numpy(ds)]


def test_paired_builders_use_the_mixin():
  assert issubclass(
    paired.PairedImageBuilder, array_record_dataset.ArrayRecordDatasetMixin
  )


def test_reads_like_the_data_source(builder):
  source = builder.as_data_source('train')
  examples = list(tfds.as_numpy(builder.as_dataset(split='train')))
  assert len(examples) == len(source) == 3
  for example, expected in zip(examples, source):
    assert example.keys() == expected.keys()
    for key in example:
      np.testing.assert_array_equal(example[key], expected[key])


def test_subsplits_and_batch(builder):
  stored = [e['id'].decode() for e in builder.as_data_source('train')]
  assert _ids(builder.as_dataset(split='train[1:]')) == stored[1:]
  both = builder.as_dataset(split=['train[:1]', 'test'])
  assert [len(_ids(ds)) for ds in both] == [1, 2]
  batch = builder.as_dataset(split='test', batch_size=-1)
  assert batch['blur'].shape == (2, 16, 24, 3)


def test_shuffle_files_shuffles_examples(builder):
  stored = _ids(builder.as_dataset(split='train'))
  config = tfds.ReadConfig(shuffle_seed=1)
  ds = builder.as_dataset(split='train', shuffle_files=True, read_config=config)
  epochs = [_ids(ds) for _ in range(8)]
  assert all(sorted(epoch) == sorted(stored) for epoch in epochs)
  assert len({tuple(epoch) for epoch in epochs}) > 1  # Reshuffled, not cached.
  again = builder.as_dataset(
    split='train', shuffle_files=True, read_config=config
  )
  assert [_ids(again) for _ in range(8)] == epochs  # Seeded.


def test_decoders_and_tfds_id(builder):
  decoders = tfds.decode.PartialDecoding(
    {'id': True, 'blur': True}, decoders={'blur': tfds.decode.SkipDecoding()}
  )
  ds = builder.as_dataset(
    split='test',
    decoders=decoders,
    read_config=tfds.ReadConfig(add_tfds_id=True),
  )
  examples = list(tfds.as_numpy(ds))
  assert sorted(examples[0]) == ['blur', 'id', 'tfds_id']
  assert examples[0]['blur'].startswith(b'\x89PNG')  # Not decoded.
  assert [e['tfds_id'].decode() for e in examples] == [
    f'gopro-test.array_record-00000-of-00001__{i}' for i in range(2)
  ]


def test_input_context_and_repeat(builder):
  stored = _ids(builder.as_dataset(split='train'))
  context = tf.distribute.InputContext(
    num_input_pipelines=2, input_pipeline_id=1
  )
  ds = builder.as_dataset(
    split='train', read_config=tfds.ReadConfig(input_context=context)
  )
  assert _ids(ds) == stored[1::2]
  ds = builder.as_dataset(
    split='train', read_config=tfds.ReadConfig(repeat_filenames=True)
  )
  assert _ids(ds.take(7)) == (stored * 3)[:7]


def test_tfrecord_is_left_to_tfds(tmp_path):
  builder = gopro_dataset_builder.Builder(
    data_dir=tmp_path, file_format='tfrecord'
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(_MANUAL_DIR))
  )
  ds = builder.as_dataset(
    split='train', read_config=tfds.ReadConfig(add_tfds_id=True)
  )
  assert [e['tfds_id'].decode().split('__')[0] for e in tfds.as_numpy(ds)] == [
    'gopro-train.tfrecord-00000-of-00001'
  ] * 3
