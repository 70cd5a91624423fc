"""Helpers of the builders' tests: dummy trees, failed builds, `tfds build`."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from tfds_gopro import make_dummy_data
from tfds_gopro import paired

TFDS = os.path.join(os.path.dirname(sys.executable), 'tfds')
# (dataset, layout) -> the writer of its dummy tree, the tree's folder.
_TREES = {
  ('gopro', 'original'): (make_dummy_data.write_gopro_original, 'GOPRO_Large'),
  ('gopro', 'flat'): (make_dummy_data.write_gopro_flat, ''),
  ('hide', 'original'): (make_dummy_data.write_hide_original, 'HIDE_dataset'),
  ('hide', 'flat'): (make_dummy_data.write_hide_flat, ''),
}


class WritesTFRecord:
  """Mixin of a `tfds.testing.DatasetBuilderTestCase` that builds TFRecord.

  Its checks read with `as_dataset`, which ArrayRecord (our default) lacks.
  """

  def _make_builder(self, config=None):
    return self.dataset_class(
      data_dir=self.tmp_dir,
      config=config,
      version=self.VERSION,
      file_format='tfrecord',
    )


def write_tree(
  dataset: str, layout: str, manual_dir: pathlib.Path
) -> pathlib.Path:
  """Writes the dummy `dataset` tree in `layout` as a manual_dir; its root.

  The root is manual_dir itself for the flattened layout, its GOPRO_Large or
  HIDE_dataset folder for the original one.
  """
  write, folder = _TREES[dataset, layout]
  root = manual_dir / folder
  write(root)
  return root


def tree_fixture(dataset: str, layout: str):
  """A fixture named `layout`: `write_tree` in the test's tmp_path/manual."""
  return pytest.fixture(name=layout)(
    lambda tmp_path: write_tree(dataset, layout, tmp_path / 'manual')
  )


def ids(source) -> list[str]:
  """The sorted example ids of a data source or dataset."""
  return sorted(example['id'].decode() for example in source)


def files(root: pathlib.Path) -> list[str]:
  """The paths of the files below `root`, relative to it, sorted."""
  return sorted(
    str(p.relative_to(root)) for p in root.rglob('*') if p.is_file()
  )


def assert_same_tree(written: pathlib.Path, committed: pathlib.Path) -> None:
  """The same files, PNGs of the same pixels, text files of the same text."""
  assert files(written) == files(committed)
  for name in files(written):
    if name.endswith('.png'):
      np.testing.assert_array_equal(
        Image.open(written / name), Image.open(committed / name), err_msg=name
      )
    else:
      assert (written / name).read_text() == (committed / name).read_text()


def build_fails(
  name: str, manual_dir: pathlib.Path, data_dir: pathlib.Path
) -> str:
  """Builds `name` from manual_dir; returns its layout error.

  Checks that the build failed with `paired.DatasetLayoutError` and left
  nothing in data_dir: no prepared dataset, no incomplete folder.
  """
  try:
    tfds.builder(name, data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
  except paired.DatasetLayoutError as e:
    error = e
  else:
    raise AssertionError(f'{name} built from {manual_dir}')
  reopened = tfds.builder(name, data_dir=data_dir)
  assert not reopened.is_prepared()
  assert not reopened.data_path.exists()
  assert not [p for p in data_dir.rglob('*') if 'incomplete' in p.name]
  return str(error)


def tfds_build(
  *args: str, cwd: pathlib.Path, timeout: float = 120
) -> subprocess.CompletedProcess:
  """`tfds build *args` run in `cwd`, its output captured."""
  return subprocess.run(
    [TFDS, 'build', *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
