"""`as_dataset()` and `tfds.load()` for datasets prepared as ArrayRecord.

TFDS 4.9.10 writes ArrayRecord files and reads them with random access
(`tfds.data_source`), but its `as_dataset()` refuses them:
`ArrayRecordFileAdapter.make_tf_data` raises NotImplementedError, so
`tfds.load(...)` prepares such a dataset and then fails. A builder that
inherits `ArrayRecordDatasetMixin` makes its `tf.data.Dataset` from
`as_data_source()` instead; other formats are read by TFDS as usual.

The module is not named `array_record.py`: `tfds build tfds_gopro/<name>` puts
`tfds_gopro/` first on sys.path while it imports the builder, and such a file
would then shadow the `array_record` package that TFDS reads the files with.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

_ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD


class ArrayRecordDatasetMixin:
  """Lets `as_dataset()`, hence `tfds.load()`, read ArrayRecord files.

  List it before the TFDS base class:

    class Builder(ArrayRecordDatasetMixin, tfds.core.GeneratorBasedBuilder):

  When the files read are ArrayRecord, each example of the split is fetched
  by index from `as_data_source()` as a serialized tf.Example and decoded with
  the dataset's features, honouring `decoders` (`tfds.decode.PartialDecoding`
  included). `as_supervised`, `batch_size` and the prefetch are added by
  `as_dataset()` on top, as for TFRecord. From `read_config`: `options`,
  `num_parallel_calls_for_decode`, `input_context` (shards the examples),
  `repeat_filenames` (repeats the examples forever), `add_tfds_id`
  (`<file>__<index in file>`), and, with `shuffle_files=True`, `shuffle_seed`
  and `shuffle_reshuffle_each_iteration`. Unlike TFRecord, where only the
  order of the files is shuffled, `shuffle_files=True` shuffles the examples
  themselves. The interleave settings have no use here and are ignored, but
  `experimental_interleave_sort_fn`, which would change what is read, is
  refused.
  """

  def _as_dataset(
    self,
    split: tfds.typing.SplitArg,
    decoders: Any = None,
    read_config: tfds.ReadConfig | None = None,
    shuffle_files: bool = False,
  ) -> tf.data.Dataset:
    """Reads a split; see `tfds.core.FileReaderBuilder._as_dataset`."""
    read_config = read_config or tfds.ReadConfig()
    if not self._reads_array_record(read_config):
      return super()._as_dataset(
        split=split,
        decoders=decoders,
        read_config=read_config,
        shuffle_files=shuffle_files,
      )
    if read_config.experimental_interleave_sort_fn is not None:
      raise NotImplementedError(
        'ReadConfig.experimental_interleave_sort_fn needs TFRecord files; '
        f'{self.name} is prepared as ArrayRecord.'
      )
    if (
      shuffle_files
      and self.info.disable_shuffling
      and read_config.enable_ordering_guard
    ):
      raise ValueError(
        f'{self.name} is an ordered dataset (disable_shuffling=True), but '
        'shuffle_files=True would shuffle its examples.'
      )

    features = self.info.features
    if isinstance(decoders, tfds.decode.PartialDecoding):
      features = decoders.extract_features(features)
      decoders = decoders.decoders
    source = self.as_data_source(
      split,
      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
      file_format=_ARRAY_RECORD,
    )
    num_examples = len(source)
    if not num_examples:
      raise ValueError(f'Split {split!r} of {self.name} has no examples.')
    tfds_ids = None
    if read_config.add_tfds_id:
      tfds_ids = np.array(
        [
          f'{os.path.basename(f.filename)}__{i}'
          for f in self.info.splits[split].file_instructions
          for i in range(f.skip, f.skip + f.take)
        ],
        dtype=object,
      )

    indices = tf.data.Dataset.range(num_examples)
    if read_config.input_context:
      indices = indices.shard(
        read_config.input_context.num_input_pipelines,
        read_config.input_context.input_pipeline_id,
      )
    if shuffle_files:
      indices = indices.shuffle(
        num_examples,
        seed=read_config.shuffle_seed,
        reshuffle_each_iteration=read_config.shuffle_reshuffle_each_iteration,
      )
    if read_config.repeat_filenames:
      indices = indices.repeat()

    def read(index: tf.Tensor) -> dict[str, tf.Tensor]:
      serialized = tf.numpy_function(
        lambda i: source[int(i)], [index], tf.string, stateful=False
      )
      serialized.set_shape(())
      example = features.deserialize_example(serialized, decoders=decoders)
      if tfds_ids is not None:
        tfds_id = tf.numpy_function(
          lambda i: tfds_ids[int(i)], [index], tf.string, stateful=False
        )
        example['tfds_id'] = tf.ensure_shape(tfds_id, ())
      return example

    ds = indices.map(
      read, num_parallel_calls=read_config.num_parallel_calls_for_decode
    )
    return ds.with_options(read_config.options)

  def _should_cache_ds(
    self,
    split: tfds.typing.SplitArg,
    shuffle_files: bool,
    read_config: tfds.ReadConfig,
  ) -> bool:
    """As TFDS, but never caches examples that are reshuffled each epoch."""
    if (
      shuffle_files
      and self._reads_array_record(read_config)
      and read_config.shuffle_reshuffle_each_iteration is not False
    ):
      # TFDS caches single-file splits even with shuffle_files=True, since it
      # only shuffles files; the cache would freeze this shuffled order.
      return False
    return super()._should_cache_ds(
      split=split, shuffle_files=shuffle_files, read_config=read_config
    )

  def _reads_array_record(self, read_config: tfds.ReadConfig) -> bool:
    """Whether the split files read are ArrayRecord (as in TFDS's reader)."""
    file_format = read_config.file_format or self.info.file_format
    return (
      file_format is not None
      and tfds.core.FileFormat.from_value(file_format) == _ARRAY_RECORD
    )
