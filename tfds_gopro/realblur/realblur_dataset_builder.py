"""`realblur`: RealBlur-J and RealBlur-R (Rim et al., ECCV 2020)."""

from __future__ import annotations

import dataclasses
import re

from etils import epath
import tensorflow_datasets as tfds

from tfds_gopro import paired

_SPLITS = ('train', 'test')
# Flattened copies name files after the scene and frame, e.g. scene230_7.png
# or scene230-7.png; other names give their stem as id.
_FLAT_NAME = re.compile(r'(?P<scene>scene\d+(?:_[a-z]+)?)[_-](?P<frame>\d+)')
# The frame number in `gt_7.png` / `blur_7.png`.
_FRAME = re.compile(r'(?:gt|blur)_(?P<frame>\d+)')


@dataclasses.dataclass(frozen=True)
class _Set:
  """One of the two RealBlur sets: its folder and list file names."""

  letter: str  # 'J' or 'R'
  folder: str

  def list_name(self, split: str) -> str:
    return f'RealBlur_{self.letter}_{split}_list.txt'


_SETS = {
  'j': _Set('J', 'RealBlur-J_ECC_IMCORR_centroid_itensity_ref'),
  'r': _Set('R', 'RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref'),
}


def _candidates(manual_dir: epath.Path, config: str) -> list[epath.Path]:
  letter = _SETS[config].letter
  return [
    manual_dir,
    manual_dir / 'RealBlur',
    manual_dir / f'RealBlur_{letter}',
  ]


def _original_root(manual_dir: epath.Path, config: str) -> epath.Path | None:
  spec = _SETS[config]
  for root in _candidates(manual_dir, config)[:2]:
    if (root / spec.folder).is_dir() or any(
      (root / spec.list_name(split)).is_file() for split in _SPLITS
    ):
      return root
  return None


def _flat_root(manual_dir: epath.Path, config: str) -> epath.Path | None:
  for root in _candidates(manual_dir, config):
    for split in _SPLITS:
      if any((root / split / f).is_dir() for f in ('input', 'target')):
        return root
  return None


def _layouts(config: str) -> tuple[paired.Layout, paired.Layout]:
  spec = _SETS[config]
  original = paired.Layout(
    name=f'original RealBlur-{spec.letter} tree',
    pattern=(
      f'[RealBlur/]{spec.list_name("{train,test}")} and '
      f'[RealBlur/]{spec.folder}/<scene>/{{gt/gt_K,blur/blur_K}}.png'
    ),
    find_root=lambda d: _original_root(d, config),
  )
  flat = paired.Layout(
    name='flattened layout (MPRNet/Restormer copy)',
    pattern=f'[RealBlur_{spec.letter}/]{{train,test}}/{{input,target}}/*.png',
    find_root=lambda d: _flat_root(d, config),
  )
  return original, flat


def _flat_id(blur: epath.Path) -> str:
  """`scene230_7.png` -> `scene230/7`, else the file stem."""
  match = _FLAT_NAME.fullmatch(blur.stem)
  return f'{match["scene"]}/{int(match["frame"])}' if match else blur.stem


def _listed_id(gt_relative: str) -> str | None:
  """`<set>/scene230/gt/gt_7.png` -> `scene230/7` (None if not so named)."""
  parts = gt_relative.split('/')
  match = _FRAME.fullmatch(epath.Path(parts[-1]).stem)
  if len(parts) < 3 or not match:
    return None
  return f'{parts[-3]}/{int(match["frame"])}'


def read_list(
  root: epath.Path, list_file: epath.Path, problems: list[str]
) -> list[paired.Pair]:
  """The pairs of one list file: lines `<gt path> <blur path>`, from `root`."""
  pairs = []
  text = list_file.read_text()
  for number, line in enumerate(text.splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    where = f'{list_file}, line {number}'
    if len(fields) != 2:
      problems.append(
        f'{where}: expected "<gt path> <blur path>", got {line.strip()!r}'
      )
      continue
    gt, blur = fields
    example_id = _listed_id(gt)
    if example_id is None:
      problems.append(f'{where}: {gt!r} is not <scene>/gt/gt_<frame>.png')
      continue
    pair = paired.Pair(id=example_id, blur=root / blur, sharp=root / gt)
    missing = [p for p in (pair.sharp, pair.blur) if not p.is_file()]
    for path in missing:
      problems.append(f'{path}: missing file (listed in {where})')
    if not missing:
      pairs.append(pair)
  if not pairs and not problems:
    problems.append(f'{list_file}: lists no pair')
  return pairs


class Builder(paired.PairedImageBuilder):
  """RealBlur blurred/sharp pairs, from the original tree or a flattened copy."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(
      name='j', description='RealBlur-J: the camera JPEGs (as PNG).'
    ),
    tfds.core.BuilderConfig(
      name='r', description='RealBlur-R: the raw images developed to sRGB.'
    ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'j'
  DESCRIPTION = (
    'RealBlur: real camera motion blur, each blurred image captured together '
    'with its sharp partner through a beam splitter. RealBlur-J (JPEG) and '
    'RealBlur-R (raw developed to sRGB), 3758 train and 980 test pairs each, '
    'splits as in the dataset\'s list files. The pairs are registered but '
    'not pixel exact: published scores align each restored image first. '
    '`id` is `<scene>/<frame>`.'
  )
  HOMEPAGE = 'http://cg.postech.ac.kr/research/RealBlur/'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put one of the two layouts of RealBlur in manual_dir:
  * the original tree: RealBlur.tar.gz from the RealBlur page
    (github.com/rimchang/RealBlur), extracted in manual_dir, with the list
    files RealBlur_J_{train,test}_list.txt and RealBlur_R_{train,test}_list.txt
    beside the two folders (they are also in the datalist/ folder of
    github.com/rimchang/SRN-Deblur):
    manual_dir[/RealBlur]/RealBlur-J_ECC_IMCORR_centroid_itensity_ref/
    <scene>/{gt/gt_K.png,blur/blur_K.png} (and RealBlur-R_BM3D_ECC_IMCORR_
    centroid_itensity_ref/ for config r);
  * a flattened copy (MPRNet/Restormer): manual_dir[/RealBlur_J]/
    {train,test}/{input,target}/*.png, the same file name in input/ and
    target/ (RealBlur_R for config r); a split that is absent is not built.
  """

  def _find_pairs(self, manual_dir: epath.Path) -> dict[str, list[paired.Pair]]:
    config = self.builder_config.name
    original, flat = _layouts(config)
    layout, root = paired.detect_layout(
      manual_dir, (original, flat), f'{self.name}/{config}'
    )
    problems = []
    splits = {}
    if layout is flat:
      present = [
        s
        for s in _SPLITS
        if any((root / s / f).is_dir() for f in ('input', 'target'))
      ]
      for split in present:
        splits[split] = paired.match_folders(
          root / split / 'input', root / split / 'target', _flat_id, problems
        )
    else:
      spec = _SETS[config]
      for split in _SPLITS:
        list_file = root / spec.list_name(split)
        if not list_file.is_file():
          problems.append(f'{list_file}: missing list file')
          continue
        splits[split] = read_list(root, list_file, problems)
    paired.raise_if_problems(problems, f'in the {layout.name} at {root}')
    return splits
