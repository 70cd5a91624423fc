r"""Writes a checkpoint's restore function and weights as a jax.export artefact.

  python -m fcn_jax.export --workdir=DIR --output=fcn.jaxexport \
      [--platforms=cpu,cuda,tpu]

The file is a serialized `jax.export.Exported` (StableHLO plus calling
convention) of

  restore(x: float32[b, 8*h, 8*w, 3]) -> float32[b, 8*h, 8*w, 3]

the final stage of the FCN of `checkpoint.find(DIR)`, clipped to [0, 1], with
the parameters embedded as constants. Batch, height and width are symbolic:
one artefact takes every batch size and every height and width that are
multiples of 8 (the caller reflect-pads, as `fcn_jax.inference` does, and
crops back). Running it needs only `jax` and numpy, no flax and no fcn_jax:

  exported = jax.export.deserialize(open('fcn.jaxexport', 'rb').read())
  sharp = exported.call(padded_batch)

`examples/run_exported.py` does that for image files.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import jax.numpy as jnp

from fcn_jax import checkpoint
from fcn_jax import image_io
from fcn_jax import models

FLAGS = flags.FLAGS
PLATFORMS = ('cpu', 'cuda', 'tpu')
INPUT_SHAPE = 'b, 8*h, 8*w, 3'  # FCN halves the image three times


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Workdir holding the checkpoint.')
  flags.DEFINE_string(
    'output', None, 'The file to write (a serialized jax.export.Exported).'
  )
  flags.DEFINE_list(
    'platforms', list(PLATFORMS), 'Platforms the artefact is lowered for.'
  )


class ExportError(Exception):
  """A bad path or option; the message starts with it."""


def export_restore(
  workdir: str, platforms: Sequence[str] = PLATFORMS
) -> jax.export.Exported:
  """The `jax.export.Exported` restore function of `workdir`'s checkpoint."""
  params, config = checkpoint.load_params(workdir)
  model = models.model_from_config(config)
  if model.tlc_train_size is not None:  # pools over sizes that depend on h, w
    model = model.clone(tlc_train_size=None)

  def restore(x: jax.Array) -> jax.Array:
    y = model.apply({'params': params}, x.astype(jnp.float32))[0]
    return jnp.clip(y, 0.0, 1.0)

  spec = jax.ShapeDtypeStruct(
    jax.export.symbolic_shape(INPUT_SHAPE), jnp.float32
  )
  return jax.export.export(jax.jit(restore), platforms=tuple(platforms))(spec)


def _check_output(path: str) -> None:
  target = epath.Path(path)
  if target.is_dir():
    raise ExportError(f'{path}: is a folder')
  if not target.parent.is_dir():
    raise ExportError(f'{path}: no such folder {target.parent}')
  if '://' not in path and not os.access(target.parent, os.W_OK):
    raise ExportError(f'{path}: cannot write in {target.parent}')


def run(
  workdir: str, output: str, platforms: Sequence[str] = PLATFORMS
) -> jax.export.Exported:
  """Checks the paths, exports and writes `output`.

  Raises:
    ExportError: naming the offending path or platform.
  """
  bad = sorted(set(platforms) - set(PLATFORMS))
  if bad or not platforms:
    raise ExportError(
      f'--platforms: {",".join(bad) or "(none)"}: use some of '
      f'{",".join(PLATFORMS)}'
    )
  try:
    checkpoint.find(workdir)
  except FileNotFoundError:
    raise ExportError(
      f'{workdir}: no checkpoint (expected {checkpoint.BEST}/<step> or '
      f'{checkpoint.LATEST}/<step>, written by main.py or fcn_jax.convert)'
    ) from None
  _check_output(output)
  try:
    exported = export_restore(workdir, platforms)
  except checkpoint.CheckpointUnreadableError as e:
    raise ExportError(str(e)) from None
  try:
    image_io.write_atomic(output, bytes(exported.serialize()))
  except OSError as e:
    raise ExportError(f'{output}: cannot write ({e.strerror or e})') from None
  return exported


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)  # Orbax's checkpoint chatter
  if not (FLAGS.workdir and FLAGS.output):
    sys.exit('error: --workdir and --output are required')
  try:
    exported = run(FLAGS.workdir, FLAGS.output, FLAGS.platforms)
  except ExportError as e:
    sys.exit(f'error: {e}')
  print(
    f'wrote {FLAGS.output}: restore({exported.in_avals[0].str_short()}) '
    f'for {",".join(exported.platforms)}'
  )


def cli() -> None:
  """The `fcn-export` command, the same as `python -m fcn_jax.export`."""
  define_flags()
  app.run(main)


if __name__ == '__main__':
  cli()
