"""The input package: datasets, the decoded cache, augmentation and streams.

The only part of fcn_jax that imports TensorFlow. It hides the GPUs from TF at
import, so that TF never takes accelerator memory.

Datasets are named by specs 'name[/config]:split' ('gopro:train',
'synthetic_blur/mine:test') and read with random access from their ArrayRecord
files through `tfds.data_source`, as raw serialized examples: one Python call
per host batch fetches the bytes of its records (ArrayRecord reads them in
parallel), and everything else (proto parsing, PNG decoding, cropping,
augmentation) runs as TF ops in parallel, deterministic tf.data maps, outside
the GIL. PNG decoding dominates the cost (two 1280x720 PNGs per sample).

Modules, one per concern:
  datasets      names, checks and builds of datasets; split sizes from TFDS;
                random-access sources of their records
  cache         the decoded cache of a training split
  augment       the release's augmentation (PIL-exact saturation, symmetries)
  train_stream  `train_iterator`: the stateless, step-indexed training stream
  eval_stream   `eval_iterator`: every example once, at its original size
"""

import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialized its devices; nothing to hide.
  pass

# pylint: disable=g-import-not-at-top,wrong-import-position
from fcn_jax.data.augment import apply_symmetry
from fcn_jax.data.augment import saturate
from fcn_jax.data.augment import SYMMETRIES
from fcn_jax.data.cache import build_decoded_cache
from fcn_jax.data.datasets import check_dataset
from fcn_jax.data.datasets import num_examples
from fcn_jax.data.datasets import parse_dataset
from fcn_jax.data.datasets import prepare_synthetic
from fcn_jax.data.eval_stream import eval_ids
from fcn_jax.data.eval_stream import eval_iterator
from fcn_jax.data.train_stream import train_iterator
# pylint: enable=g-import-not-at-top,wrong-import-position

__all__ = [
  'SYMMETRIES',
  'apply_symmetry',
  'build_decoded_cache',
  'check_dataset',
  'eval_ids',
  'eval_iterator',
  'num_examples',
  'parse_dataset',
  'prepare_synthetic',
  'saturate',
  'train_iterator',
]
