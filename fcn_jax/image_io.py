"""Image files and atomic writes: the one place fcn_jax reads and writes them.

Paths may be any etils.epath path (local or gs://). Images in memory are HxWx3
float32 in [0, 1] (`to_float_rgb`, `read_image`) or uint8 (`to_uint8`,
`write_png`); every file is written atomically (`write_atomic`). Pillow is
imported when an image file is read or written, so the rest runs without it.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from typing import Any, Union

from etils import epath
import numpy as np

ArrayLike = Any  # np.ndarray or jax.Array
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def to_float_rgb(image: np.ndarray) -> tuple[np.ndarray, bool]:
  """(HxWx3 float32 image in [0, 1], whether `image` was of an integer type).

  Takes HxW or HxWx1 (gray), HxWx2 (gray and alpha), HxWx3 (RGB) or HxWx4
  (RGBA); alpha is dropped. uint8 is divided by 255, uint16 by 65535; floats
  are taken to be in [0, 1] and are not clipped.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or not image.size:
    raise ValueError(
      f'expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}'
    )
  if image.dtype == np.uint8:
    scale, integer = 255, True
  elif image.dtype == np.uint16:
    scale, integer = 65535, True
  elif np.issubdtype(image.dtype, np.floating):
    scale, integer = 1, False
  else:
    raise TypeError(
      f'expected a uint8, uint16 or float image, got {image.dtype}'
    )
  image = image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1]
  image = np.broadcast_to(image, image.shape[:2] + (3,))
  return image.astype(np.float32) / np.float32(scale), integer


def to_uint8(image: ArrayLike) -> np.ndarray:
  """[0, 1] floats to uint8 as the release's test.py: clamp, then rint(x * 255).

  (`skimage.img_as_ubyte` multiplies float32 by 255 and rounds half to even.)
  """
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  return np.rint(image * np.float32(255)).astype(np.uint8)


def read_image(path: epath.PathLike) -> np.ndarray:
  """An image file as HxWx3 float32 in [0, 1], oriented as it displays.

  Any mode Pillow reads: 16-bit grayscale ('I;16'; also 'I', as older Pillows
  read 16-bit PNGs, clipped to [0, 65535]) keeps its precision; everything
  else (L, LA, P, RGBA, CMYK, ...) goes through Pillow's 8-bit RGB conversion,
  which drops alpha. The EXIF orientation of photos is applied. (Pillow reads
  16-bit RGB PNGs as 8-bit RGB.)
  """
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top

  with epath.Path(path).open('rb') as f, Image.open(f) as im:
    im = ImageOps.exif_transpose(im)
    if im.mode in SIXTEEN_BIT_MODES:
      pixels = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
      return to_float_rgb(pixels)[0]
    if im.mode in ('P', 'PA'):  # via RGBA: Pillow warns on P with transparency
      im = im.convert('RGBA')
    return np.asarray(im.convert('RGB'), np.float32) / np.float32(255)


def write_atomic(path: epath.PathLike, data: Union[bytes, str]) -> None:
  """Writes `data` (str as UTF-8) to `path`, atomically.

  The data goes to a hidden temporary file beside `path` that replaces `path`
  once complete, so an interrupted write never leaves a truncated file.
  """
  path = epath.Path(path)
  if isinstance(data, str):
    data = data.encode('utf-8')
  tmp = path.with_name(f'.{path.name}.{secrets.token_hex(4)}.tmp')
  try:
    with tmp.open('wb') as f:
      f.write(data)
      if isinstance(f, io.IOBase):  # a local file: on disk before the rename
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
  except BaseException:
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
    raise


def write_png(path: epath.PathLike, image: np.ndarray) -> None:
  """Writes a uint8 HxWx3 image as an RGB PNG, atomically (`write_atomic`)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(
    buffer, format='PNG'
  )
  write_atomic(path, buffer.getvalue())
