r"""Deblurs an image with an artefact written by `python -m fcn_jax.export`.

  python examples/run_exported.py --model=fcn.jaxexport --input=blurry.jpg \
      --output=sharp.png

Needs only jax, numpy and Pillow (for the image files): no flax, no fcn_jax.
The image is reflect-padded at the bottom and right to a multiple of 8 and
cropped back, and the result quantised with rint(x * 255), as
`fcn_jax.predict` does, so both give the same image.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
from PIL import Image
from PIL import ImageOps


def load(path: str) -> jax.export.Exported:
  with open(path, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def deblur(exported: jax.export.Exported, image: np.ndarray) -> np.ndarray:
  """HxWx3 float32 in [0, 1] -> the restored HxWx3 float32 in [0, 1]."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, -h % 8), (0, -w % 8), (0, 0)), mode='reflect')
  return np.asarray(exported.call(padded[None].astype(np.float32)))[0, :h, :w]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', required=True)
  parser.add_argument('--input', required=True)
  parser.add_argument('--output', required=True, help='a .png file')
  args = parser.parse_args(argv)
  exported = load(args.model)
  with Image.open(args.input) as im:
    image = np.asarray(ImageOps.exif_transpose(im).convert('RGB'), np.float32)
  sharp = deblur(exported, image / np.float32(255))
  Image.fromarray(np.rint(sharp * np.float32(255)).astype(np.uint8)).save(
    args.output, format='PNG'
  )
  print(f'wrote {args.output}', file=sys.stderr)


if __name__ == '__main__':
  main()
