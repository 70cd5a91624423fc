"""Small RealBlur trees made from real photos, for tests.

The sharp image of each example is a crop of a photo from `skimage.data`, the
blurred one the same crop under a real motion kernel (a 7-pixel line at an
angle that depends on the example), as 8-bit RGB PNGs, laid out like the
extracted RealBlur archive (with list files as the dataset's: one
`<gt path> <blur path> ` line per pair, no newline after the last) or like
a flattened {train,test}/{input,target} copy.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image
from scipy import ndimage
import skimage.data

from tfds_gopro.realblur import realblur_dataset_builder as rb

# (split, scene, frames): two train scenes, one test scene.
SCENES = (
  ('train', 'scene001', (1, 2)),
  ('train', 'scene003', (1,)),
  ('test', 'scene002', (1, 2, 10)),
)
_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')
HEIGHT, WIDTH = 64, 80


def ids(split: str) -> list[str]:
  """The example ids of `split`, sorted."""
  return sorted(
    f'{scene}/{frame}'
    for s, scene, frames in SCENES
    if s == split
    for frame in frames
  )


def sharp_image(example_id: str, config: str = 'j') -> np.ndarray:
  """The ground truth of an example: a crop of a photo, (H, W, 3) uint8."""
  scene, frame = example_id.split('/')
  number = int(scene[len('scene') :])
  photo = getattr(skimage.data, _PHOTOS[number % len(_PHOTOS)])()
  top = (40 * int(frame)) % (photo.shape[0] - HEIGHT - 8)
  top += 7 if config == 'r' else 0
  left = (30 * number) % (photo.shape[1] - WIDTH)
  crop = photo[top : top + HEIGHT, left : left + WIDTH, :3]
  return np.ascontiguousarray(crop, dtype=np.uint8)


def blur_image(sharp: np.ndarray, example_id: str) -> np.ndarray:
  """The sharp image under a 7-pixel linear motion kernel."""
  angle = 17.0 * sum(map(ord, example_id))
  kernel = np.zeros((7, 7))
  kernel[3, :] = 1
  kernel = ndimage.rotate(kernel, angle % 180, reshape=False, order=1)
  kernel /= kernel.sum()
  channels = [
    ndimage.convolve(sharp[..., c].astype(np.float64), kernel, mode='reflect')
    for c in range(3)
  ]
  return np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8)


def _save(path: pathlib.Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


def write_original(root: pathlib.Path, config: str = 'j') -> None:
  """The extracted archive of one set, with its two list files, in `root`."""
  spec = rb._SETS[config]  # pylint: disable=protected-access
  lines = {split: [] for split in rb._SPLITS}  # pylint: disable=protected-access
  for split, scene, frames in SCENES:
    for frame in frames:
      example_id = f'{scene}/{frame}'
      sharp = sharp_image(example_id, config)
      gt = f'{spec.folder}/{scene}/gt/gt_{frame}.png'
      blur = f'{spec.folder}/{scene}/blur/blur_{frame}.png'
      _save(root / gt, sharp)
      _save(root / blur, blur_image(sharp, example_id))
      lines[split].append(f'{gt} {blur} ')
  for split, split_lines in lines.items():
    (root / spec.list_name(split)).write_text('\n'.join(split_lines))


def write_flat(root: pathlib.Path, config: str = 'j') -> None:
  """A flattened copy: `<split>/{input,target}/<scene>_<frame>.png`."""
  for split, scene, frames in SCENES:
    for frame in frames:
      example_id = f'{scene}/{frame}'
      sharp = sharp_image(example_id, config)
      name = f'{scene}_{frame}.png'
      _save(root / split / 'target' / name, sharp)
      _save(root / split / 'input' / name, blur_image(sharp, example_id))
