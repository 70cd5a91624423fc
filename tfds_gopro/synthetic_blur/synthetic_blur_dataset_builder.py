"""`synthetic_blur`: GoPro-like blurry/sharp pairs simulated from sharp photos.

GoPro (Nah et al., 2017) made its blurry images by averaging 7 to 13
consecutive frames of a 240 fps video taken with a shaking hand-held camera,
in linear light, and took the middle frame as the sharp target. This builder
replays that recipe on still photographs: each example is a fixed-size crop of
a photo, the blurry image is the average of N frames (N uniform in 7..13) of
the crop seen along a smooth random camera path (sub-pixel translations along
a cubic Bezier curve, plus a little rotation), averaged in linear light
(sRGB -> linear -> mean -> sRGB) with a little shot and read noise, and the
sharp image is the middle frame, which is the unshifted crop itself.

Everything is deterministic given the config's `seed`: every example draws
from its own generator seeded with (seed, photo, crop number), so the same
config always writes the same bytes. The train/test split is by photograph.

Photos come from scikit-image's bundled photographs (config `skimage`, the
default, nothing is downloaded) or from any folder, through a config built on
the command line:

  tfds build tfds_gopro/synthetic_blur --data_dir=DATA
  tfds build tfds_gopro/synthetic_blur --data_dir=DATA \
      --config='{"name": "mine", "source_dir": "/my/photos"}'

The second is then read as `synthetic_blur/mine` (e.g. with
`tfds.data_source('synthetic_blur/mine', data_dir=DATA)`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import io
from typing import Any
import zlib

import importlib.util
import pathlib
import sys

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageOps
from scipy import ndimage
import tensorflow_datasets as tfds

if importlib.util.find_spec('tfds_gopro') is None:
  # `tfds build tfds_gopro/synthetic_blur` imports this file without the
  # repository root on sys.path.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tfds_gopro import array_record_dataset  # pylint: disable=g-import-not-at-top

# Photographs bundled with scikit-image 0.26 (no download), by split. Synthetic
# images (colorwheel, logo, ...), scans, and `clock` (already motion blurred)
# are left out; gray photos are repeated over the three channels.
SKIMAGE_TRAIN = (
    'astronaut', 'chelsea', 'immunohistochemistry', 'hubble_deep_field',
    'retina', 'motorcycle', 'camera', 'moon', 'brick', 'grass', 'gravel',
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


class Builder(array_record_dataset.ArrayRecordDatasetMixin,
              tfds.core.GeneratorBasedBuilder):
  """Blurry/sharp pairs simulated from sharp photos the way GoPro was made."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticBlurConfig(
          name='skimage',
          description=(
              'Photographs bundled with scikit-image; 128x128 crops, 24 per'
              ' photo.'
          ),
      ),
      SyntheticBlurConfig(
          name='mild',
          description=(
              'The same photographs and split, 128x128 crops, milder shake '
              '(2 to 6 pixel paths): what configs/demo.py learns on a CPU.'
          ),
          min_blur=2.0, max_blur=6.0,
      ),
      SyntheticBlurConfig(
          name='skimage_large',
          description=(
              'The same photographs and split, two 256x384 crops each: '
              'full-size evaluation of models trained on small crops.'
          ),
          crop_height=256, crop_width=384, crops_per_photo=2,
      ),
      SyntheticBlurConfig(
          name='tiny',
          description=(
              'The same photographs, two 32x48 crops each: a dataset for'
              ' tests and configs/tiny.py that builds in seconds.'
          ),
          crop_height=32, crop_width=48, crops_per_photo=2, max_side=192,
          min_blur=2.0, max_blur=6.0,
      ),
  ]

  def __init__(
      self, *, file_format: str | tfds.core.FileFormat | None = None,
      **kwargs: Any):
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.info.initialized:
      # Not prepared yet and no format asked for: write ArrayRecord, which
      # `tfds.data_source` needs for random access. Prepared data keeps its
      # own format.
      self.info.set_file_format('array_record', override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    image = tfds.features.Image(shape=(None, None, 3), encoding_format='png')
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'blur': image,
            'sharp': image,
            'id': tfds.features.Text(),
        }),
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
    return {name: self._generate_examples(srcs)
            for name, srcs in splits.items()}

  def _generate_examples(
      self, sources: Sequence[str | tuple[str, epath.Path]]
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    cfg = self.builder_config
    used = 0
    for source in sources:
      if isinstance(source, str):
        key, photo = source, load_skimage_photo(source)
      else:
        key, path = source
        photo = load_photo(path.read_bytes())
      photo = fit_photo(photo, cfg.max_side)
      h, w = photo.shape[:2]
      if h < cfg.crop_height or w < cfg.crop_width:
        logging.warning(
            'Skipping photo %s: %dx%d (after max_side=%d) is smaller than the'
            ' %dx%d crop.', key, h, w, cfg.max_side, cfg.crop_height,
            cfg.crop_width)
        continue
      used += 1
      for i in range(cfg.crops_per_photo):
        rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode()), i])
        blur, sharp = simulate_pair(photo, cfg, rng)
        example_id = f'{key}/{i:03d}'
        yield example_id, {'blur': blur, 'sharp': sharp, 'id': example_id}
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


def load_skimage_photo(name: str) -> np.ndarray:
  """Returns a scikit-image bundled photograph as uint8 RGB."""
  from skimage import data  # pylint: disable=g-import-not-at-top

  photo = data.stereo_motorcycle()[0] if name == 'motorcycle' else getattr(
      data, name)()
  return as_rgb8(photo)


def load_photo(encoded: bytes) -> np.ndarray:
  """Decodes an image file (EXIF orientation applied) to uint8 RGB."""
  with Image.open(io.BytesIO(encoded)) as image:
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith('I'):  # 16-bit gray.
      array = np.asarray(image, dtype=np.float64)
      return as_rgb8(np.clip(np.round(array / 257), 0, 255))
    return np.asarray(image.convert('RGB'), dtype=np.uint8)


def as_rgb8(photo: np.ndarray) -> np.ndarray:
  """Gray or RGB(A) array in [0, 255] -> (H, W, 3) uint8."""
  photo = np.asarray(photo)
  if photo.ndim == 2:
    photo = np.repeat(photo[..., None], 3, axis=-1)
  return np.ascontiguousarray(photo[..., :3]).astype(np.uint8)


def fit_photo(photo: np.ndarray, max_side: int) -> np.ndarray:
  """Downscales `photo` (Lanczos) so its longer side is at most `max_side`."""
  h, w = photo.shape[:2]
  if not max_side or max(h, w) <= max_side:
    return photo
  scale = max_side / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  resized = Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS)
  return np.asarray(resized, dtype=np.uint8)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
  """sRGB values in [0, 1] -> linear light (IEC 61966-2-1)."""
  return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
  """Linear light in [0, 1] -> sRGB values (IEC 61966-2-1)."""
  x = np.clip(x, 0.0, 1.0)
  return np.where(
      x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def camera_path(
    rng: np.random.Generator, num_frames: int, length: float, roll: float
) -> tuple[np.ndarray, np.ndarray]:
  """Smooth random camera path, relative to its middle frame.

  Args:
    rng: Random generator.
    num_frames: Number of frames N.
    length: Arc length of the translation path, in pixels.
    roll: Total rotation over the path, in radians.

  Returns:
    (N, 2) (dy, dx) shifts and (N,) angles; both are 0 at frame N // 2.
  """
  # Cubic Bezier whose control points follow a random walk with inertia.
  angle = rng.uniform(0, 2 * np.pi)
  points = [np.zeros(2)]
  for _ in range(3):
    angle += rng.normal(0, 0.7)
    step = rng.uniform(0.5, 1.5)
    points.append(points[-1] + step * np.array([np.sin(angle), np.cos(angle)]))
  control = np.stack(points)

  def bezier(t):
    t = t[:, None]
    return ((1 - t) ** 3 * control[0] + 3 * (1 - t) ** 2 * t * control[1] +
            3 * (1 - t) * t ** 2 * control[2] + t ** 3 * control[3])

  dense = bezier(np.linspace(0, 1, 257))
  arc = np.linalg.norm(np.diff(dense, axis=0), axis=1).sum()
  t = np.linspace(0, 1, num_frames)
  mid = num_frames // 2
  shifts = bezier(t) * (length / arc if arc > 0 else 0.0)
  angles = roll * (t - t[mid])
  return shifts - shifts[mid], angles


def simulate_pair(
    photo: np.ndarray, cfg: SyntheticBlurConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Cuts one (blur, sharp) uint8 pair of the config's crop size from `photo`.

  Args:
    photo: (H, W, 3) uint8 sRGB photo, at least as large as the crop.
    cfg: The config.
    rng: The generator of this example; the result depends only on it.

  Returns:
    (blur, sharp), both (crop_height, crop_width, 3) uint8.
  """
  h, w = cfg.crop_height, cfg.crop_width
  num_frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
  length = rng.uniform(cfg.min_blur, cfg.max_blur)
  roll = np.deg2rad(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
  shifts, angles = camera_path(rng, num_frames, length, roll)

  # Crop position: keep the path inside the photo when it fits, and prefer
  # textured crops (of 8 candidates, the first with some contrast).
  reach = length + abs(roll) * 0.5 * np.hypot(h, w) + 2
  margin_y = int(min(np.ceil(reach), (photo.shape[0] - h) // 2))
  margin_x = int(min(np.ceil(reach), (photo.shape[1] - w) // 2))
  best, best_std = None, -1.0
  for _ in range(8):
    y0 = int(rng.integers(margin_y, photo.shape[0] - h - margin_y + 1))
    x0 = int(rng.integers(margin_x, photo.shape[1] - w - margin_x + 1))
    std = float(photo[y0:y0 + h, x0:x0 + w].mean(axis=-1).std()) / 255
    if std > best_std:
      best, best_std = (y0, x0), std
    if std >= 0.05:
      break
  y0, x0 = best
  sharp = photo[y0:y0 + h, x0:x0 + w].copy()

  # Average the frames in linear light. Only the region the path can reach
  # is converted; sampling outside the photo mirrors it.
  ry0, rx0 = max(y0 - margin_y, 0), max(x0 - margin_x, 0)
  region = photo[ry0:y0 + h + margin_y, rx0:x0 + w + margin_x]
  linear = srgb_to_linear(region.astype(np.float64) / 255)
  yy, xx = np.meshgrid(np.arange(h, dtype=np.float64),
                       np.arange(w, dtype=np.float64), indexing='ij')
  cy, cx = (h - 1) / 2, (w - 1) / 2
  total = np.zeros((h, w, 3))
  for (dy, dx), theta in zip(shifts, angles):
    cos, sin = np.cos(theta), np.sin(theta)
    sy = cos * (yy - cy) - sin * (xx - cx) + cy + dy + (y0 - ry0)
    sx = sin * (yy - cy) + cos * (xx - cx) + cx + dx + (x0 - rx0)
    for c in range(3):
      total[..., c] += ndimage.map_coordinates(
          linear[..., c], [sy, sx], order=1, mode='mirror')
  mean = total / num_frames

  # Sensor noise: shot noise in linear light, read noise after the sRGB curve.
  k = rng.uniform(0.0, cfg.shot_noise)
  if k > 0:
    mean = mean + k * np.sqrt(np.maximum(mean, 0)) * rng.standard_normal(
        mean.shape)
  srgb = linear_to_srgb(mean) * 255
  if cfg.read_noise > 0:
    srgb = srgb + cfg.read_noise * rng.standard_normal(srgb.shape)
  blur = np.clip(np.round(srgb), 0, 255).astype(np.uint8)
  return blur, sharp


def procedural_photo(
    rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
  """A random uint8 RGB 'photo' (shapes, edges, texture) for tests and demos."""
  yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
  base = rng.uniform(0.2, 0.8, 3)
  grad = rng.uniform(-0.3, 0.3, (2, 3))
  image = base + yy[..., None] * grad[0] + xx[..., None] * grad[1]
  for _ in range(12):
    cy, cx = rng.uniform(0, 1, 2) * (yy.max(), xx.max())
    ry, rx = rng.uniform(0.03, 0.25, 2)
    color = rng.uniform(0, 1, 3)
    if rng.uniform() < 0.5:
      inside = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
    else:
      inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    image[inside] = color
  freq = rng.uniform(20, 60, 2)
  image += 0.08 * (np.sin(freq[0] * yy) * np.sin(freq[1] * xx))[..., None]
  image += rng.normal(0, 0.02, image.shape)
  return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
