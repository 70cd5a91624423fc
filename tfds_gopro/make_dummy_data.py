"""Writes the dummy data of the `gopro` and `hide` builders.

The images are tiny (16x24) and procedural: seeded gradients and rectangles
for the sharp image, a horizontal box blur of it for the blurred one. The same
ids always give the same pixels. Run from the repository root:

  .venv/bin/python tfds_gopro/make_dummy_data.py

The tests also call the `write_*` functions to build fixtures in tmp dirs.
"""

from __future__ import annotations

import pathlib
import shutil
import zlib

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 16, 24
_HERE = pathlib.Path(__file__).resolve().parent

# Scene -> number of frames, per split, of the dummy GoPro data.
GOPRO_SCENES = {
  'train': {'GOPR0001_00_00': 2, 'GOPR0002_00_00': 1},
  'test': {'GOPR0003_00_00': 2},
}
# Blurred file names of the dummy HIDE data, per folder of HIDE_dataset.
HIDE_FILES = {
  'train': ('1fromGOPR0001.png', '2fromGOPR0001.png'),
  'test/test-close-ups': ('1fromGOPR1001.png', '2fromGOPR1001.png'),
  'test/test-long-shot': ('1fromGOPR2001.png',),
}


def sharp_image(key: str) -> np.ndarray:
  """A deterministic uint8 RGB image for `key`: gradients and rectangles.

  The keys are `<scene>/<frame>` for GoPro and the file stem for HIDE.
  """
  rng = np.random.default_rng(zlib.crc32(key.encode()))
  y, x = np.mgrid[:HEIGHT, :WIDTH]
  slopes = rng.integers(1, 10, size=(2, 3))
  image = (
    rng.integers(0, 256, size=3)
    + x[..., None] * slopes[0]
    + y[..., None] * slopes[1]
  ) % 256
  for _ in range(3):
    top, left = rng.integers(0, HEIGHT - 4), rng.integers(0, WIDTH - 4)
    image[top : top + 4, left : left + 6] = rng.integers(0, 256, size=3)
  return image.astype(np.uint8)


def blur_image(sharp: np.ndarray, gamma: float = 1.0) -> np.ndarray:
  """Horizontal 5-tap box blur, averaged in linear space when gamma != 1."""
  linear = (sharp / 255.0) ** gamma
  padded = np.pad(linear, ((0, 0), (2, 2), (0, 0)), mode='edge')
  blurred = sum(padded[:, i : i + WIDTH] for i in range(5)) / 5
  return np.round(255 * blurred ** (1 / gamma)).astype(np.uint8)


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path, format='PNG')


def write_gopro_original(root: pathlib.Path) -> None:
  """`root/{train,test}/<scene>/{blur,blur_gamma,sharp}/NNNNNN.png`."""
  for split, scenes in GOPRO_SCENES.items():
    for scene, frames in scenes.items():
      for frame in range(1, frames + 1):
        name = f'{frame:06d}.png'
        sharp = sharp_image(f'{scene}/{frame:06d}')
        write_png(root / split / scene / 'sharp' / name, sharp)
        write_png(root / split / scene / 'blur' / name, blur_image(sharp))
        write_png(
          root / split / scene / 'blur_gamma' / name,
          blur_image(sharp, gamma=2.2),
        )
  # Other files of the tree are ignored by the builder.
  (root / 'train' / 'GOPR0001_00_00' / 'notes.txt').write_text('not an image\n')


def write_gopro_flat(root: pathlib.Path) -> None:
  """`root/{train,test}/{input,target}/<scene>-<frame>.png`.

  One test file is named without the `-<frame>` suffix: its id is the stem.
  """
  for split, scenes in GOPRO_SCENES.items():
    for scene, frames in scenes.items():
      for frame in range(1, frames + 1):
        sep = '_' if (split, frame) == ('test', 2) else '-'
        name = f'{scene}{sep}{frame:06d}.png'
        sharp = sharp_image(f'{scene}/{frame:06d}')
        write_png(root / split / 'target' / name, sharp)
        write_png(root / split / 'input' / name, blur_image(sharp))


def write_hide_original(root: pathlib.Path) -> None:
  """`root/{GT,train,test/test-close-ups,test/test-long-shot}` + lists."""
  for folder, names in HIDE_FILES.items():
    for name in names:
      sharp = sharp_image(name.removesuffix('.png'))
      write_png(root / 'GT' / name, sharp)
      write_png(root / folder / name, blur_image(sharp))
  for split in ('train', 'test'):
    names = [
      n for f, ns in HIDE_FILES.items() if f.startswith(split) for n in ns
    ]
    (root / f'{split}.txt').write_text(''.join(f'{n}\n' for n in names))


def write_hide_flat(root: pathlib.Path) -> None:
  """`root/test/{input,target}/*.png` (no train split)."""
  for folder in ('test/test-close-ups', 'test/test-long-shot'):
    name = HIDE_FILES[folder][0]
    sharp = sharp_image(name.removesuffix('.png'))
    write_png(root / 'test' / 'target' / name, sharp)
    write_png(root / 'test' / 'input' / name, blur_image(sharp))


def write_all(base: pathlib.Path) -> None:
  """Writes the `dummy_data/` folders of both builders under `base`."""
  write_gopro_original(
    base / 'gopro' / 'dummy_data' / 'original' / 'GOPRO_Large'
  )
  write_gopro_flat(base / 'gopro' / 'dummy_data' / 'flat')
  write_hide_original(
    base / 'hide' / 'dummy_data' / 'original' / 'HIDE_dataset'
  )
  write_hide_flat(base / 'hide' / 'dummy_data' / 'flat')


def main() -> None:
  for dataset in ('gopro', 'hide'):
    shutil.rmtree(_HERE / dataset / 'dummy_data', ignore_errors=True)
  write_all(_HERE)
  print(f'Wrote {_HERE}/{{gopro,hide}}/dummy_data')


if __name__ == '__main__':
  main()
