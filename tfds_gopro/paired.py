"""Shared code of the paired blur/sharp image builders (`gopro`, `hide`).

A builder subclasses `PairedImageBuilder` and implements `_find_pairs`, which
detects the layout of the manual_dir (`detect_layout`) and lists the pairs of
each split (`match_folders`). Before TFDS writes anything, every pair is decoded
and checked (`validate_pairs`); any problem ends the build with a
`DatasetLayoutError` that names the offending files. Builders write ArrayRecord
files unless the caller asks for another format, so that
`tfds.data_source(...)` can read them with random access; `tfds.load(...)` and
`as_dataset()` read them too (`array_record_dataset.ArrayRecordDatasetMixin`).
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures
import dataclasses
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from tfds_gopro import array_record_dataset

DEFAULT_FILE_FORMAT = tfds.core.FileFormat.ARRAY_RECORD
SUPERVISED_KEYS = ('blur', 'sharp')
# Problems listed in an error message; the rest are only counted.
_MAX_LISTED_PROBLEMS = 25
# Entries of manual_dir shown when it matches no layout.
_MAX_LISTED_ENTRIES = 20


class DatasetLayoutError(ValueError):
  """The manual_dir does not hold a complete and valid copy of the dataset."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One example: a blurred image, its sharp partner and the example id."""

  id: str
  blur: epath.Path
  sharp: epath.Path


@dataclasses.dataclass(frozen=True)
class Layout:
  """One way a dataset may be laid out in manual_dir.

  Attributes:
    name: Short name used in messages, e.g. 'flattened'.
    pattern: The files expected, relative to manual_dir, for messages.
    find_root: Returns the folder that holds this layout in manual_dir, or
      None when manual_dir does not look like this layout.
  """

  name: str
  pattern: str
  find_root: Callable[[epath.Path], epath.Path | None]


def features() -> tfds.features.FeaturesDict:
  """The features of every paired builder.

  `blur` and `sharp` (PNG), `id`, and the pair's `height` and `width` (so that
  readers group images by shape without decoding them).
  """
  return tfds.features.FeaturesDict(
    {
      'blur': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
      'sharp': tfds.features.Image(
        shape=(None, None, 3), encoding_format='png'
      ),
      'id': tfds.features.Text(),
      'height': tfds.features.Scalar(dtype=np.int32),
      'width': tfds.features.Scalar(dtype=np.int32),
    }
  )


def subdirs(folder: epath.Path) -> list[epath.Path]:
  """The sorted subfolders of `folder`; empty if it is not a folder."""
  if not folder.is_dir():
    return []
  return sorted(p for p in folder.iterdir() if p.is_dir())


def list_pngs(folder: epath.Path) -> dict[str, epath.Path]:
  """Maps file name to path for the PNG files directly inside `folder`."""
  return {
    p.name: p
    for p in sorted(folder.iterdir())
    if p.suffix.lower() == '.png' and p.is_file()
  }


def describe_dir(folder: epath.Path) -> str:
  """A short listing of `folder` (two levels), for error messages."""
  if not folder.is_dir():
    return f'{folder} does not exist or is not a folder'
  entries = sorted(folder.iterdir())
  lines = []
  for entry in entries[:_MAX_LISTED_ENTRIES]:
    if entry.is_dir():
      children = sorted(entry.iterdir())
      shown = ', '.join(
        c.name + ('/' if c.is_dir() else '') for c in children[:5]
      )
      if len(children) > 5:
        shown += f', ... ({len(children)} entries)'
      lines.append(f'  {entry.name}/  [{shown}]')
    else:
      lines.append(f'  {entry.name}')
  if len(entries) > _MAX_LISTED_ENTRIES:
    lines.append(f'  ... and {len(entries) - _MAX_LISTED_ENTRIES} more')
  return '\n'.join(lines) or '  (empty)'


def detect_layout(
  manual_dir: epath.Path,
  layouts: Sequence[Layout],
  dataset: str,
) -> tuple[Layout, epath.Path]:
  """Returns the one layout found in `manual_dir` and the folder holding it.

  Args:
    manual_dir: The manual download folder.
    layouts: The layouts the dataset may have.
    dataset: Dataset name, for messages.

  Raises:
    DatasetLayoutError: `manual_dir` matches no layout, or several; the message
      lists the layouts expected and what `manual_dir` holds.
  """
  found = []
  for layout in layouts:
    root = layout.find_root(manual_dir)
    if root is not None:
      found.append((layout, root))
  if len(found) == 1:
    return found[0]
  expected = '\n'.join(
    f'  - {layout.name}: {layout.pattern}' for layout in layouts
  )
  if not found:
    problem = 'matches no known layout'
  else:
    problem = 'matches several layouts ({}); keep only one'.format(
      ', '.join(f'{layout.name} in {root}' for layout, root in found)
    )
  raise DatasetLayoutError(
    f'The manual_dir of {dataset}, {manual_dir}, {problem}.\n'
    f'Expected layouts (paths relative to manual_dir):\n{expected}\n'
    f'Found in {manual_dir}:\n{describe_dir(manual_dir)}'
  )


def match_folders(
  blur_dir: epath.Path,
  sharp_dir: epath.Path,
  make_id: Callable[[epath.Path], str],
  problems: list[str],
  *,
  sharp_needs_blur: bool = True,
) -> list[Pair]:
  """Pairs the PNG files of two folders by file name.

  Args:
    blur_dir: Folder of the blurred images.
    sharp_dir: Folder of the sharp images.
    make_id: Returns the example id of a blurred image path.
    problems: Missing folders, files and partners are appended here.
    sharp_needs_blur: Whether a sharp image without a blurred partner is a
      problem (False when `sharp_dir` is shared with other folders or splits).

  Returns:
    The pairs, sorted by file name.
  """
  missing = [d for d in (blur_dir, sharp_dir) if not d.is_dir()]
  for folder in missing:
    problems.append(f'{folder}: missing folder')
  if missing:
    return []
  blurs = list_pngs(blur_dir)
  sharps = list_pngs(sharp_dir)
  if not blurs:
    problems.append(f'{blur_dir}: no .png files')
  pairs = []
  for name, blur in blurs.items():
    if name in sharps:
      pairs.append(Pair(id=make_id(blur), blur=blur, sharp=sharps[name]))
    else:
      problems.append(
        f'{blur}: missing sharp partner (expected {sharp_dir / name})'
      )
  if sharp_needs_blur:
    for name in sharps.keys() - blurs.keys():
      problems.append(
        f'{sharps[name]}: missing blurred partner (expected {blur_dir / name})'
      )
  return pairs


def raise_if_problems(problems: Sequence[str], context: str) -> None:
  """Raises a `DatasetLayoutError` listing `problems`, if there are any."""
  if not problems:
    return
  problems = sorted(problems)
  lines = [f'  - {p}' for p in problems[:_MAX_LISTED_PROBLEMS]]
  if len(problems) > _MAX_LISTED_PROBLEMS:
    lines.append(f'  ... and {len(problems) - _MAX_LISTED_PROBLEMS} more')
  raise DatasetLayoutError(
    f'{len(problems)} problem(s) {context}; nothing was written:\n'
    + '\n'.join(lines)
  )


def _inspect_image(path: epath.Path) -> tuple[tuple[int, int] | None, str]:
  """Decodes `path`; returns ((width, height), '') or (None, the problem)."""
  try:
    with path.open('rb') as f, Image.open(f) as image:
      if image.format != 'PNG':
        return None, f'{path}: not a PNG file (decodes as {image.format})'
      if image.mode != 'RGB':
        channels = len(image.getbands())
        return None, (
          f'{path}: expected an 8-bit RGB image (3 channels), got '
          f'PIL mode {image.mode!r} ({channels} channel(s))'
        )
      image.load()  # Decodes all the pixel data: finds truncated files.
      return image.size, ''
  except Exception as e:  # pylint: disable=broad-except
    # PIL reports bad data with many exception types (OSError, SyntaxError,
    # ValueError, zlib.error, ...); each one is a problem to report.
    return None, f'{path}: cannot be decoded ({type(e).__name__}: {e})'


def validate_pairs(
  splits: Mapping[str, Sequence[Pair]],
  manual_dir: epath.Path,
) -> dict[epath.Path, tuple[int, int]]:
  """Decodes every image and checks each pair, before anything is written.

  Each image must be a decodable 8-bit RGB PNG, both images of a pair must
  have the same shape, and ids must be unique within a split.

  Args:
    splits: The pairs of each split.
    manual_dir: The manual download folder, for messages.

  Returns:
    The (height, width) of every image, by path.

  Raises:
    DatasetLayoutError: Listing every problem found, with full file paths.
  """
  start = time.monotonic()
  problems = []
  for split, pairs in splits.items():
    by_id = collections.defaultdict(list)
    for pair in pairs:
      by_id[pair.id].append(pair.blur)
    for example_id, paths in by_id.items():
      if len(paths) > 1:
        problems.append(
          f'{paths[1]}: id {example_id!r} also used by '
          f'{paths[0]} in split {split!r}'
        )
  paths = set()
  for pairs in splits.values():
    for pair in pairs:
      paths.update((pair.blur, pair.sharp))
  paths = sorted(paths)
  workers = min(32, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    results = dict(zip(paths, pool.map(_inspect_image, paths)))
  problems.extend(problem for _, problem in results.values() if problem)
  for pairs in splits.values():
    for pair in pairs:
      blur_size, sharp_size = results[pair.blur][0], results[pair.sharp][0]
      if blur_size and sharp_size and blur_size != sharp_size:
        problems.append(
          f'{pair.blur}: shape mismatch, {_shape(blur_size)} (HxWxC) but '
          f'its sharp partner {pair.sharp} is {_shape(sharp_size)}'
        )
  raise_if_problems(problems, f'in the data found in {manual_dir}')
  logging.info(
    'Validated %d pairs (%s) in %.1fs.',
    sum(len(p) for p in splits.values()),
    ', '.join(f'{s}: {len(p)}' for s, p in splits.items()),
    time.monotonic() - start,
  )
  return {path: (size[1], size[0]) for path, (size, _) in results.items()}


def _shape(size: tuple[int, int]) -> str:
  width, height = size
  return f'{height}x{width}x3'


class PairedImageBuilder(
  array_record_dataset.ArrayRecordDatasetMixin,
  tfds.core.GeneratorBasedBuilder,
  skip_registration=True,
):
  """Base of the paired blur/sharp builders.

  Writes ArrayRecord by default, which `tfds.data_source()` reads, and
  `as_dataset()` and `tfds.load()` too (see `ArrayRecordDatasetMixin`).

  Subclasses set `DESCRIPTION`, `HOMEPAGE`, `VERSION`, `RELEASE_NOTES` and
  `MANUAL_DOWNLOAD_INSTRUCTIONS`, and implement `_find_pairs`. The citation is
  read from the `CITATIONS.bib` file next to the subclass.
  """

  DESCRIPTION = ''
  HOMEPAGE = ''

  def __init__(
    self,
    *,
    file_format: str | tfds.core.FileFormat | None = None,
    **kwargs: Any,
  ):
    """Same as the TFDS builder, but writes ArrayRecord by default.

    Args:
      file_format: Format of the record files. When None and no prepared
        dataset is found in data_dir, ArrayRecord (for `tfds.data_source`);
        when None and a prepared dataset is found, the format it was written
        in.
      **kwargs: Passed to `tfds.core.GeneratorBasedBuilder`.
    """
    super().__init__(file_format=file_format, **kwargs)
    # `info.initialized` is True when the info was restored from a prepared
    # dataset; its format must then be kept.
    if file_format is None and not self.info.initialized:
      self.info.set_file_format(DEFAULT_FILE_FORMAT, override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=features(),
      supervised_keys=SUPERVISED_KEYS,
      homepage=self.HOMEPAGE,
      citation=self.get_metadata().citation,
    )

  @abc.abstractmethod
  def _find_pairs(self, manual_dir: epath.Path) -> dict[str, list[Pair]]:
    """Detects the layout of `manual_dir` and lists the pairs of each split.

    Raises:
      DatasetLayoutError: For an unknown layout, or missing folders or
        partners.
    """

  def _split_generators(
    self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
    manual_dir = epath.Path(dl_manager.manual_dir)
    if not manual_dir.is_absolute():  # Messages name files by full path.
      manual_dir = manual_dir.resolve()
    splits = self._find_pairs(manual_dir)
    sizes = validate_pairs(splits, manual_dir)
    return {
      split: self._generate_examples(pairs, sizes)
      for split, pairs in splits.items()
    }

  def _generate_examples(
    self,
    pairs: Sequence[Pair],
    sizes: Mapping[epath.Path, tuple[int, int]],
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    for pair in pairs:
      height, width = sizes[pair.blur]
      # The files are stored as they are: the PNG bytes are not re-encoded.
      yield (
        pair.id,
        {
          'blur': pair.blur,
          'sharp': pair.sharp,
          'id': pair.id,
          'height': height,
          'width': width,
        },
      )
