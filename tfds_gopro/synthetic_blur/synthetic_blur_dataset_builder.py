"""`synthetic_blur`: GoPro-like blurry/sharp pairs simulated from sharp photos.

The configs and the split are here; the simulator is `camera_shake.py`. Every
example draws from its own generator seeded with (seed, photo, crop number),
so the same config always writes the same bytes. See README.md (the dataset)
and the main README (building it from your own photos).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
from typing import Any
import zlib

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from tfds_gopro import array_record_dataset
from tfds_gopro.synthetic_blur import camera_shake

# Photographs bundled with scikit-image 0.26 (no download), by split. Synthetic
# images (colorwheel, logo, ...), scans, and `clock` (already motion blurred)
# are left out; gray photos are repeated over the three channels.
SKIMAGE_TRAIN = (
  'astronaut',
  'chelsea',
  'immunohistochemistry',
  'hubble_deep_field',
  'retina',
  'motorcycle',
  'camera',
  'moon',
  'brick',
  'grass',
  'gravel',
  'text',
)
SKIMAGE_TEST = ('coffee', 'rocket', 'coins')

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


@dataclasses.dataclass(eq=False)
class SyntheticBlurConfig(tfds.core.BuilderConfig):
  """How to make the pairs.

  Attributes:
    source_dir: Folder of sharp photos (searched recursively); empty for the
      photos bundled with scikit-image. If it holds `train/` and `test/`
      subfolders they are the splits; otherwise photos are assigned to splits
      by a seeded shuffle of their paths.
    crop_height: Height of every example, a multiple of 8.
    crop_width: Width of every example, a multiple of 8.
    crops_per_photo: Number of examples cut from each photo.
    seed: Seed of everything random (split, crops, paths, noise).
    test_fraction: Fraction of photos put in `test` when not given by folders.
    max_side: Photos whose longer side exceeds this are first downscaled to it
      (0: never); the blur is simulated at the downscaled size.
    min_frames: Fewest frames averaged into one blurry image.
    max_frames: Most frames averaged into one blurry image.
    min_blur: Shortest camera path, in output pixels.
    max_blur: Longest camera path, in output pixels.
    max_rotation: Largest total camera roll along the path, in degrees.
    shot_noise: Largest shot noise: its std at linear intensity x is
      k * sqrt(x) with k uniform in [0, shot_noise] per example.
    read_noise: Std of the Gaussian read noise, in 8-bit levels.
  """

  source_dir: str = ''
  crop_height: int = 128
  crop_width: int = 128
  crops_per_photo: int = 24
  seed: int = 0
  test_fraction: float = 0.2
  max_side: int = 512
  min_frames: int = 7
  max_frames: int = 13
  min_blur: float = 3.0
  max_blur: float = 15.0
  max_rotation: float = 1.0
  shot_noise: float = 0.01
  read_noise: float = 1.0

  def __post_init__(self):
    if self.crop_height % 8 or self.crop_width % 8:
      raise ValueError(
        f'Crop size {self.crop_height}x{self.crop_width} must be a multiple'
        ' of 8.'
      )
    if not 1 <= self.min_frames <= self.max_frames:
      raise ValueError('Need 1 <= min_frames <= max_frames.')
    if not 0 <= self.min_blur <= self.max_blur:
      raise ValueError('Need 0 <= min_blur <= max_blur.')
    if self.crops_per_photo < 1:
      raise ValueError('crops_per_photo must be positive.')


class Builder(
  array_record_dataset.ArrayRecordDatasetMixin, tfds.core.GeneratorBasedBuilder
):
  """Blurry/sharp pairs simulated from sharp photos the way GoPro was made."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'Initial release.',
    '1.1.0': 'Stores each pair\'s height and width (features `height`,'
    ' `width`).',
  }
  BUILDER_CONFIGS = [
    SyntheticBlurConfig(
      name='skimage',
      description=(
        'Photographs bundled with scikit-image; 128x128 crops, 24 per photo.'
      ),
    ),
    SyntheticBlurConfig(
      name='mild',
      description=(
        'The same photographs and split, 128x128 crops, milder shake '
        '(2 to 6 pixel paths): what configs/demo.py learns on a CPU.'
      ),
      min_blur=2.0,
      max_blur=6.0,
    ),
    SyntheticBlurConfig(
      name='skimage_large',
      description=(
        'The same photographs and split, two 256x384 crops each: '
        'full-size evaluation of models trained on small crops.'
      ),
      crop_height=256,
      crop_width=384,
      crops_per_photo=2,
    ),
    SyntheticBlurConfig(
      name='tiny',
      description=(
        'The same photographs, two 32x48 crops each: a dataset for'
        ' tests and configs/tiny.py that builds in seconds.'
      ),
      crop_height=32,
      crop_width=48,
      crops_per_photo=2,
      max_side=192,
      min_blur=2.0,
      max_blur=6.0,
    ),
  ]

  def __init__(
    self,
    *,
    file_format: str | tfds.core.FileFormat | None = None,
    **kwargs: Any,
  ):
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.info.initialized:
      # Not prepared yet and no format asked for: write ArrayRecord, which
      # `tfds.data_source` needs for random access. Prepared data keeps its
      # own format.
      self.info.set_file_format('array_record', override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    image = tfds.features.Image(shape=(None, None, 3), encoding_format='png')
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'blur': image,
          'sharp': image,
          'id': tfds.features.Text(),
          'height': tfds.features.Scalar(dtype=np.int32),
          'width': tfds.features.Scalar(dtype=np.int32),
        }
      ),
      supervised_keys=('blur', 'sharp'),
      homepage='https://seungjunnah.github.io/Datasets/gopro',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    if cfg.source_dir:
      splits = split_folder(epath.Path(cfg.source_dir).expanduser(), cfg)
    else:
      splits = {'train': list(SKIMAGE_TRAIN), 'test': list(SKIMAGE_TEST)}
    return {
      name: self._generate_examples(srcs) for name, srcs in splits.items()
    }

  def _generate_examples(
    self, sources: Sequence[str | tuple[str, epath.Path]]
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    cfg = self.builder_config
    used = 0
    for source in sources:
      if isinstance(source, str):
        key, photo = source, camera_shake.load_skimage_photo(source)
      else:
        key, path = source
        photo = camera_shake.load_photo(path.read_bytes())
      photo = camera_shake.fit_photo(photo, cfg.max_side)
      h, w = photo.shape[:2]
      if h < cfg.crop_height or w < cfg.crop_width:
        logging.warning(
          'Skipping photo %s: %dx%d (after max_side=%d) is smaller than the'
          ' %dx%d crop.',
          key,
          h,
          w,
          cfg.max_side,
          cfg.crop_height,
          cfg.crop_width,
        )
        continue
      used += 1
      for i in range(cfg.crops_per_photo):
        rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode()), i])
        blur, sharp = camera_shake.simulate_pair(photo, cfg, rng)
        example_id = f'{key}/{i:03d}'
        yield (
          example_id,
          {
            'blur': blur,
            'sharp': sharp,
            'id': example_id,
            'height': blur.shape[0],
            'width': blur.shape[1],
          },
        )
    if not used:
      raise ValueError(
        f'None of the {len(sources)} photos of a split is at least'
        f' {cfg.crop_height}x{cfg.crop_width} (after max_side='
        f'{cfg.max_side}).'
      )


def split_folder(
  root: epath.Path, cfg: SyntheticBlurConfig
) -> dict[str, list[tuple[str, epath.Path]]]:
  """Lists the photos of `root` as {split: [(key, path)]}, split by photo."""

  def photos(folder):
    found = []
    for path in folder.iterdir():  # (`rglob('**')` is refused by TFDS paths.)
      if path.is_dir():
        found.extend(photos(path))
      elif path.suffix.lower() in IMAGE_SUFFIXES:
        found.append((path.relative_to(root).with_suffix('').as_posix(), path))
    return sorted(found)

  if not root.is_dir():
    raise ValueError(f'source_dir {root} is not a folder.')
  if (root / 'train').is_dir() and (root / 'test').is_dir():
    splits = {s: photos(root / s) for s in ('train', 'test')}
  else:
    everything = photos(root)
    order = np.random.default_rng([cfg.seed, 1]).permutation(len(everything))
    n_test = int(round(cfg.test_fraction * len(everything)))
    if len(everything) >= 2:
      n_test = min(max(n_test, 1), len(everything) - 1)
    test = set(order[:n_test].tolist())
    splits = {
      'train': [s for i, s in enumerate(everything) if i not in test],
      'test': [s for i, s in enumerate(everything) if i in test],
    }
  for name, srcs in splits.items():
    if not srcs:
      raise ValueError(f'No photos for split {name!r} in {root}.')
  return splits
