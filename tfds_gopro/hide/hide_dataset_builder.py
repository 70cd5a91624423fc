"""`hide`: the HIDE human-aware motion deblurring dataset (Shen et al.)."""

from __future__ import annotations

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from tfds_gopro import paired

_TEST_GROUPS = ('test-close-ups', 'test-long-shot')


def _original_root(manual_dir: epath.Path) -> epath.Path | None:
  for root in (manual_dir, manual_dir / 'HIDE_dataset'):
    if (root / 'GT').is_dir():
      return root
  return None


def _flat_root(manual_dir: epath.Path) -> epath.Path | None:
  for split in ('train', 'test'):
    for folder in ('input', 'target'):
      if (manual_dir / split / folder).is_dir():
        return manual_dir
  return None


_ORIGINAL = paired.Layout(
  name='original HIDE_dataset tree',
  pattern=(
    '[HIDE_dataset/]{GT,train,test/test-close-ups,'
    'test/test-long-shot}/*.png (+ train.txt, test.txt)'
  ),
  find_root=_original_root,
)
_FLAT = paired.Layout(
  name='flattened layout (MPRNet/Restormer/FCN copy)',
  pattern='test/{input,target}/*.png (+ optional train/{input,target})',
  find_root=_flat_root,
)


def _stem_id(blur: epath.Path) -> str:
  return blur.stem


def _group_id(blur: epath.Path) -> str:
  """`test/test-close-ups/x.png` -> `test-close-ups/x`."""
  return f'{blur.parent.name}/{blur.stem}'


def _check_listing(
  listing: epath.Path,
  blur_dirs: list[epath.Path],
  problems: list[str],
) -> None:
  """Checks that the images named in `listing` (train.txt, ...) are present."""
  if not listing.is_file():
    return
  found = set()
  for folder in blur_dirs:
    if folder.is_dir():
      found.update(paired.list_pngs(folder))
  listed = set()
  for line in listing.read_text().splitlines():
    if line.strip():
      name = epath.Path(line.split()[0]).name
      listed.add(name if name.lower().endswith('.png') else f'{name}.png')
  folders = ', '.join(str(d) for d in blur_dirs)
  for name in sorted(listed - found):
    problems.append(f'{listing}: lists {name}, which is missing from {folders}')
  if found - listed:
    logging.warning(
      '%d images of %s are not listed in %s; using them too.',
      len(found - listed),
      folders,
      listing,
    )


class Builder(paired.PairedImageBuilder):
  """HIDE blurred/sharp pairs, from the original tree or a flattened copy."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'Initial release.',
    '1.1.0': 'Stores each pair\'s height and width (features `height`,'
    ' `width`).',
  }
  DESCRIPTION = (
    'HIDE (Human-aware Image DEblurring): blurred frames made by averaging '
    'consecutive frames of 240 fps videos with humans in them, each with a '
    'sharp frame. The test split (2025 pairs of 1280x720 RGB images) has '
    'close-ups and long shots; `id` is `test-close-ups/<stem>` or '
    '`test-long-shot/<stem>` (just the stem for the train split and for the '
    'flattened layout).'
  )
  HOMEPAGE = 'https://github.com/joanshen0508/HA_deblur'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put one of the two layouts of HIDE in manual_dir:
  * the original HIDE_dataset tree (links on
    https://github.com/joanshen0508/HA_deblur), extracted in manual_dir:
    manual_dir/HIDE_dataset/{GT,train,test/test-close-ups,test/test-long-shot}
    with train.txt and test.txt (or those entries directly in manual_dir);
  * the flattened test set distributed with MPRNet, Restormer or FCN:
    manual_dir/test/{input,target}/*.png (and train/{input,target} if any).
  """

  def _find_pairs(self, manual_dir: epath.Path) -> dict[str, list[paired.Pair]]:
    layout, root = paired.detect_layout(
      manual_dir, (_ORIGINAL, _FLAT), self.name
    )
    problems = []
    splits = {}
    if layout is _FLAT:
      for split in ('train', 'test'):
        if split == 'test' or (root / split).is_dir():
          splits[split] = paired.match_folders(
            root / split / 'input', root / split / 'target', _stem_id, problems
          )
    else:
      # Sharp images of both splits are in GT/, under the blurred file's name.
      gt = root / 'GT'
      if (root / 'train').is_dir():
        splits['train'] = paired.match_folders(
          root / 'train', gt, _stem_id, problems, sharp_needs_blur=False
        )
        _check_listing(root / 'train.txt', [root / 'train'], problems)
      groups = [root / 'test' / group for group in _TEST_GROUPS]
      splits['test'] = [
        pair
        for group in groups  # pylint: disable=g-complex-comprehension
        for pair in paired.match_folders(
          group, gt, _group_id, problems, sharp_needs_blur=False
        )
      ]
      _check_listing(root / 'test.txt', groups, problems)
    paired.raise_if_problems(problems, f'in the {layout.name} at {root}')
    return splits
