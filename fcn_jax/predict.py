r"""Deblurs an image, or every image of a folder, with a trained FCN.

  python -m fcn_jax.predict --workdir=DIR --input=blurry.jpg --output=sharp.png
  python -m fcn_jax.predict --workdir=DIR --input=blurry/ --output=sharp/ \
      [--ensemble] [--tile=512 --overlap=32] [--tlc_train_size=256] \
      [--bucket=128] [--verbose]

DIR is a training or conversion workdir (its best checkpoint, else its latest);
DIR, inputs and outputs may be gs:// (any etils.epath) paths.
Outputs are RGB 8-bit PNGs of the input's size (as displayed: the EXIF
orientation of photos is applied); a folder's outputs keep the inputs' stems
and a folder's inputs are all its non-hidden files, each of which must be an
image. Every input is opened before anything is written, and each PNG
is written to a temporary file that then replaces the output, so an error
leaves earlier outputs complete and never touches an input. Images are
reflect-padded to a multiple of --bucket (default 8, as the release pads) and
cropped back; each distinct padded size compiles once, so a folder of many
sizes compiles far less often with --bucket=128 (the result then differs
slightly; see README). --verbose prints each compilation and the totals.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

from absl import app
from absl import flags
from absl import logging
from etils import epath
from PIL import Image
import tqdm

from fcn_jax import checkpoint
from fcn_jax import image_io
from fcn_jax import inference

FLAGS = flags.FLAGS
BUCKET = inference.MULTIPLE  # --bucket's default: exact, as the release pads


def define_flags() -> None:
  """The command line's flags (defined only when run as a program, so that
  importing this module next to other CLIs defines no clashing flags)."""
  flags.DEFINE_string('workdir', None, 'Workdir holding the checkpoint.')
  flags.DEFINE_string(
    'input', None, 'An image file, or a folder of image files.'
  )
  flags.DEFINE_string(
    'output',
    None,
    'A .png file (or an existing folder) for a file input; a '
    'folder (created if needed) for a folder input.',
  )
  flags.DEFINE_bool(
    'ensemble', False, 'x8 geometric self-ensemble (8x slower).'
  )
  flags.DEFINE_integer(
    'tile',
    None,
    'Tile side (a multiple of 8) for images too large to run '
    'whole; tiles see local statistics, so results differ a '
    'little from whole-image inference.',
  )
  flags.DEFINE_integer('overlap', 32, 'Minimum overlap of tiles, in pixels.')
  flags.DEFINE_integer(
    'tlc_train_size',
    None,
    'Test-time local statistics: the training crop size whose '
    'statistics channel attention should see.',
  )
  flags.DEFINE_integer(
    'bucket',
    BUCKET,
    'Pad height and width to a multiple of this (a '
    'multiple of 8): images of many sizes then share few '
    'compilations. '
    '8 pads exactly as the release does; larger buckets '
    'change the result slightly (see README).',
  )
  flags.DEFINE_bool(
    'verbose',
    False,
    'Print each compilation (padded shape, seconds) and totals.',
  )


class PredictError(Exception):
  """A bad path or file; the message starts with the path."""


def _is_png_path(path: str) -> bool:
  return path.lower().endswith('.png')


def _check_image(path: str) -> None:
  try:
    with epath.Path(path).open('rb') as f, Image.open(f) as im:
      im.verify()
  except Image.UnidentifiedImageError:
    raise PredictError(f'{path}: not an image file') from None
  except Exception as e:  # pylint: disable=broad-except
    raise PredictError(
      f'{path}: cannot read as an image ({type(e).__name__}: {e})'
    ) from None


def _file_key(path: str):
  """What identifies an existing file: (device, inode) on a local disk (so
  links count), its URI elsewhere (gs://...)."""
  if '://' in path:
    return path
  st = os.stat(path)
  return st.st_dev, st.st_ino


def plan(input_path: str, output_path: str) -> list[tuple[str, str]]:
  """(input, output) pairs, after checking every input and output path.

  Writes nothing. A folder input takes its regular, non-hidden files, sorted;
  each must be an image.

  Raises:
    PredictError: naming the first offending path.
  """
  src, out = epath.Path(input_path), epath.Path(output_path)
  if not src.exists():
    raise PredictError(f'{input_path}: no such file or directory')
  if src.is_dir():
    if out.exists() and not out.is_dir():
      raise PredictError(f'{output_path}: not a folder (the input is a folder)')
    files = sorted(
      (p for p in src.iterdir() if not p.name.startswith('.') and p.is_file()),
      key=lambda p: p.name,
    )
    if not files:
      raise PredictError(f'{input_path}: no files to deblur')
    pairs = [(str(p), str(out / f'{p.stem}.png')) for p in files]
  else:
    if out.is_dir() or output_path.endswith('/'):
      output = str(out / f'{src.stem}.png')
    elif _is_png_path(output_path):
      output = output_path
    else:
      raise PredictError(
        f'{output_path}: the output must be a .png file or a folder'
      )
    pairs = [(input_path, output)]

  seen = {}
  for src, dst in pairs:
    if dst in seen:
      raise PredictError(
        f'{src}: has the same output name as {seen[dst]} ({dst})'
      )
    seen[dst] = src
  inputs = {_file_key(src) for src, _ in pairs}
  for src, dst in pairs:
    if epath.Path(dst).exists():
      if _file_key(dst) in inputs:
        raise PredictError(f'{dst}: is an input; refusing to overwrite it')
      if epath.Path(dst).is_dir():
        raise PredictError(f'{dst}: is a folder')
  for src, _ in pairs:
    _check_image(src)
  return pairs


def run(
  workdir: str,
  input_path: str,
  output_path: str,
  *,
  ensemble: bool = False,
  tile: Optional[int] = None,
  overlap: int = 32,
  tlc_train_size: Optional[int] = None,
  progress: bool = True,
  bucket: int = BUCKET,
  verbose: bool = False,
) -> list[str]:
  """Deblurs `input_path` (a file or a folder) into `output_path`.

  Checks the checkpoint and all paths first (see `plan`), then loads the model
  and writes one PNG per input. Images are padded to a multiple of `bucket`
  (see `inference.Deblurrer`); `verbose` prints each compilation and totals.

  Returns:
    The paths written.

  Raises:
    PredictError: naming the offending path.
  """
  try:
    checkpoint.find(workdir)
  except FileNotFoundError:
    raise PredictError(
      f'{workdir}: no checkpoint (expected {checkpoint.BEST}/<step> or '
      f'{checkpoint.LATEST}/<step>, written by main.py or fcn_jax.convert)'
    ) from None
  pairs = plan(input_path, output_path)
  start = time.perf_counter()
  try:
    deblurrer = inference.load(
      workdir,
      ensemble=ensemble,
      tile=tile,
      overlap=overlap,
      tlc_train_size=tlc_train_size,
      bucket=bucket,
    )
  except checkpoint.CheckpointUnreadableError as e:
    raise PredictError(str(e)) from None
  for directory in sorted({str(epath.Path(d).parent) for _, d in pairs}):
    epath.Path(directory).mkdir(parents=True, exist_ok=True)
  folder = epath.Path(input_path).is_dir()
  written = []
  for src, dst in tqdm.tqdm(
    pairs, unit='image', disable=not (progress and folder)
  ):
    try:
      image = image_io.read_image(src)
    except Exception as e:  # pylint: disable=broad-except
      raise PredictError(
        f'{src}: cannot read as an image ({type(e).__name__}: {e})'
      ) from None
    compiled = len(deblurrer.compilations)
    sharp = image_io.to_uint8(deblurrer(image))
    if verbose and len(deblurrer.compilations) > compiled:
      shape, seconds = deblurrer.compilations[-1]
      tqdm.tqdm.write(
        f'{src}: compiled {"x".join(map(str, shape))} in {seconds:.1f} s',
        file=sys.stderr,
      )
    try:
      image_io.write_png(dst, sharp)
    except OSError as e:
      raise PredictError(f'{dst}: cannot write ({e.strerror or e})') from None
    written.append(dst)
  if verbose:
    compile_s = sum(s for _, s in deblurrer.compilations)
    print(
      f'{len(written)} images, {len(deblurrer.compilations)} compilations '
      f'({compile_s:.1f} s), {time.perf_counter() - start:.1f} s in all',
      file=sys.stderr,
    )
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)  # Orbax's checkpoint chatter
  if not (FLAGS.workdir and FLAGS.input and FLAGS.output):
    sys.exit('error: --workdir, --input and --output are required')
  if FLAGS.tile is not None:
    try:
      inference.check_tiling(FLAGS.tile, FLAGS.overlap)
    except ValueError as e:
      sys.exit(f'error: --tile/--overlap: {e}')
  try:
    inference.check_bucket(FLAGS.bucket)
  except ValueError as e:
    sys.exit(f'error: --bucket: {e}')
  if FLAGS.tlc_train_size is not None and FLAGS.tlc_train_size <= 0:
    sys.exit(
      f'error: --tlc_train_size: must be positive, got {FLAGS.tlc_train_size}'
    )
  try:
    written = run(
      FLAGS.workdir,
      FLAGS.input,
      FLAGS.output,
      ensemble=FLAGS.ensemble,
      tile=FLAGS.tile,
      overlap=FLAGS.overlap,
      tlc_train_size=FLAGS.tlc_train_size,
      bucket=FLAGS.bucket,
      verbose=FLAGS.verbose,
    )
  except PredictError as e:
    sys.exit(f'error: {e}')
  if not epath.Path(FLAGS.input).is_dir():
    print(f'wrote {written[0]}')


def cli() -> None:
  """The `fcn-predict` command, the same as `python -m fcn_jax.predict`."""
  define_flags()
  app.run(main)


if __name__ == '__main__':
  cli()
