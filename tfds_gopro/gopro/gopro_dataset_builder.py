"""`gopro`: the GoPro motion deblurring dataset (Nah et al., CVPR 2017)."""

from __future__ import annotations

import re

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from tfds_gopro import paired

_SPLITS = ('train', 'test')
# The published sizes of the splits (Nah et al., CVPR 2017), facts of the
# dataset: configs/gopro.py and gopro_release.py turn their epochs into steps
# with TRAIN_EXAMPLES when they load. A prepared copy's own sizes are in its
# `builder.info.splits`.
TRAIN_EXAMPLES = 2103
TEST_EXAMPLES = 1111
# Flattened copies name files `<scene>-<frame>.png`, e.g. GOPR0384_11_00-000001.
_FLAT_NAME = re.compile(r'(?P<scene>.+)-(?P<frame>\d+)')


def _original_root(manual_dir: epath.Path) -> epath.Path | None:
  for root in (manual_dir, manual_dir / 'GOPRO_Large'):
    for split in _SPLITS:
      if any(
        (scene / 'sharp').is_dir() for scene in paired.subdirs(root / split)
      ):
        return root
  return None


def _flat_root(manual_dir: epath.Path) -> epath.Path | None:
  for split in _SPLITS:
    for folder in ('input', 'target'):
      if (manual_dir / split / folder).is_dir():
        return manual_dir
  return None


_ORIGINAL = paired.Layout(
  name='original GOPRO_Large tree',
  pattern='[GOPRO_Large/]{train,test}/<scene>/{blur,blur_gamma,sharp}/*.png',
  find_root=_original_root,
)
_FLAT = paired.Layout(
  name='flattened layout (MPRNet/Restormer/FCN copy)',
  pattern='{train,test}/{input,target}/*.png',
  find_root=_flat_root,
)


def _scene_id(blur: epath.Path) -> str:
  """`<split>/<scene>/blur/000001.png` -> `<scene>/000001`."""
  return f'{blur.parent.parent.name}/{blur.stem}'


def _flat_id(blur: epath.Path) -> str:
  """`GOPR0384_11_00-000001.png` -> `GOPR0384_11_00/000001`, else the stem."""
  match = _FLAT_NAME.fullmatch(blur.stem)
  return f'{match["scene"]}/{match["frame"]}' if match else blur.stem


class Builder(paired.PairedImageBuilder):
  """GoPro blurred/sharp pairs, from the original tree or a flattened copy."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'Initial release.',
    '1.1.0': 'Stores each pair\'s height and width (features `height`,'
    ' `width`).',
  }
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(
      name='blur',
      description=(
        'Inputs from the blur/ folders, the standard GoPro '
        'protocol; works with both layouts.'
      ),
    ),
    tfds.core.BuilderConfig(
      name='blur_gamma',
      description=(
        'Inputs from the blur_gamma/ folders (blur synthesised '
        'with gamma correction); original tree only.'
      ),
    ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'blur'
  DESCRIPTION = (
    'GoPro dynamic-scene motion deblurring dataset: blurred frames made by '
    'averaging consecutive sharp frames of 240 fps GoPro HERO4 videos, each '
    f'with the sharp middle frame. {TRAIN_EXAMPLES} train and'
    f' {TEST_EXAMPLES} test pairs of 1280x720 RGB images. `id` is'
    ' `<scene>/<frame>`.'
  )
  HOMEPAGE = 'https://seungjunnah.github.io/Datasets/gopro'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put one of the two layouts of GoPro in manual_dir:
  * the original tree: GOPRO_Large.zip from Seungjun Nah's page
    https://seungjunnah.github.io/Datasets/gopro, extracted in manual_dir
    (manual_dir/GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/*.png;
    the train/ and test/ folders may also be directly in manual_dir);
  * the flattened copy distributed with MPRNet, Restormer or FCN:
    manual_dir/{train,test}/{input,target}/*.png (config `blur` only; the
    `blur_gamma` build is skipped there, with a warning).
  """

  def download_and_prepare(
    self,
    *,
    download_dir: epath.PathLike | None = None,
    download_config: tfds.download.DownloadConfig | None = None,
    **kwargs,
  ) -> None:
    """As TFDS's, but skips `blur_gamma` on a flattened copy, with a warning.

    `tfds build tfds_gopro/gopro` builds every config; the flattened copy has
    no blur_gamma inputs, so that config is left unprepared (nothing written)
    and the command still succeeds with `blur`. Readers of `gopro/blur_gamma`
    then get TFDS's not-prepared error.
    """
    if self.builder_config.name != 'blur' and not self.data_path.exists():
      config = download_config or tfds.download.DownloadConfig()
      # Where TFDS looks for the manual download (DatasetBuilder's default).
      manual_dir = epath.Path(
        config.manual_dir
        or epath.Path(download_dir or self.data_dir_root / 'downloads')
        / 'manual'
      )
      if _flat_root(manual_dir) and not _original_root(manual_dir):
        logging.warning(
          'Skipped %s: manual_dir %s holds the %s, %s, which has only the '
          'standard blur inputs; %s/blur is built from it. Put the original '
          'GOPRO_Large tree in manual_dir to build %s.',
          self.info.full_name,
          manual_dir,
          _FLAT.name,
          _FLAT.pattern,
          self.name,
          self.info.full_name,
        )
        return
    super().download_and_prepare(
      download_dir=download_dir, download_config=download_config, **kwargs
    )

  def _find_pairs(self, manual_dir: epath.Path) -> dict[str, list[paired.Pair]]:
    layout, root = paired.detect_layout(
      manual_dir, (_ORIGINAL, _FLAT), self.name
    )
    blur_folder = self.builder_config.name
    if layout is _FLAT and blur_folder != 'blur':
      raise paired.DatasetLayoutError(
        f'Config {self.name}/{blur_folder} needs the original GOPRO_Large '
        f'tree ({_ORIGINAL.pattern}), but manual_dir {manual_dir} holds the '
        f'{_FLAT.name} ({_FLAT.pattern}), which has only the standard blur '
        f'inputs. Build {self.name}/blur instead, or put GOPRO_Large in '
        'manual_dir.'
      )
    problems = []
    splits = {}
    for split in _SPLITS:
      if layout is _FLAT:
        splits[split] = paired.match_folders(
          root / split / 'input', root / split / 'target', _flat_id, problems
        )
        continue
      scenes = paired.subdirs(root / split)
      if not scenes:
        problems.append(f'{root / split}: missing folder, or no scene in it')
      splits[split] = [
        pair
        for scene in scenes  # pylint: disable=g-complex-comprehension
        for pair in paired.match_folders(
          scene / blur_folder, scene / 'sharp', _scene_id, problems
        )
      ]
    paired.raise_if_problems(problems, f'in the {layout.name} at {root}')
    return splits
