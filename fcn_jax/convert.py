r"""Converts published PyTorch weights into the project's checkpoint format.

  python -m fcn_jax.convert --torch_checkpoint=model_best.pth --workdir=DIR

reads a file saved the way the FCN release's or MPRNet's train.py saves it
(`torch.save({'epoch', 'state_dict', 'optimizer'})`, or a bare state_dict) and
writes DIR/checkpoints/0 (see `fcn_jax.checkpoint`). PyTorch is needed only
for reading the .pth file: `pip install torch`.

Two architectures are recognised by their keys: the FCN release's `Net`
(`shallow_feat0.*`, `attention_down/up.*`) and MPRNet's deblurring network
(github swz30/MPRNet, Deblurring/MPRNet.py; e.g. its published
`model_deblurring.pth`), which is FCN without the processing block and the
query-key gate: it becomes `FCN(use_pb=False, use_efem=False)`, and the
checkpoint's config says so, so predict, eval and `fcn_jax.load` rebuild it.

Names: ours follow the paper where the release's are obscure; `torch_key` is the
single map between the two trees and is used in both directions.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Iterator, Mapping, Optional

from absl import app
from absl import flags
from etils import epath
import jax
import numpy as np

from fcn_jax import checkpoint
from fcn_jax.models import FCN

UNUSED_PREFIX = 'stage1_decoder1.'  # built by the release's Net, never called

# Our top-level module names -> the release's.
_TOP = {
  'processing_block': 'shallow_feat0',
  'msam12': 'sam12',
  'msam23': 'sam23',
  'raw_information': 'stage3_orsnet',
  'query_key': '',
}
_CAB_PARENTS = re.compile(r'^(cab\d*|skip_attn\d)$')


class ConversionError(ValueError):
  """A state_dict that does not fit the FCN architecture."""


def _rename(parent: Optional[str], name: str, num_cab: int) -> str:
  """The release's name for our module `name` inside our module `parent`."""
  if parent is None:
    return _TOP.get(name, name)
  if parent == 'query_key':
    return f'attention_{name}'
  if parent == 'processing_block' or re.fullmatch(r'shallow_feat\d', parent):
    return {'conv': '0', 'cab': '1'}[name]
  if _CAB_PARENTS.match(parent) and name in ('conv1', 'conv2'):
    return {'conv1': 'body.0', 'conv2': 'body.2'}[name]
  if parent == 'ca':
    return {'squeeze': 'conv_du.0', 'excite': 'conv_du.2'}[name]
  if name == 'ca':
    return 'CA'
  m = re.fullmatch(r'stage\d_(encoder|decoder)', parent)
  if m and re.fullmatch(r'level\d', name):
    return f'{m.group(1)}_{name}'
  if re.fullmatch(r'level\d|cabs', parent):
    return name.removeprefix('cab')
  if name == 'cabs':
    return 'body'
  if re.fullmatch(r'orb\d', parent) and name == 'conv':
    return f'body.{num_cab}'
  if re.fullmatch(r'down\d\d', parent):
    return 'down.1'
  if re.fullmatch(r'up\d\d|up_(enc|dec)1|up_(enc|dec)2_\d', parent):
    return 'up.1'
  m = re.fullmatch(r'up_(enc|dec)2_(\d)', name)
  if m:
    return f'up_{m.group(1)}2.{m.group(2)}'
  return name


def torch_key(path: tuple[str, ...], num_cab: int) -> str:
  """The release's state_dict key of our conv kernel at `path` (ending in 'kernel').

  The PReLU slope 'prelu' has one key per CAB instead; see `prelu_keys`.
  """
  names = path[:-1]
  parts = [
    _rename(names[i - 1] if i else None, name, num_cab)
    for i, name in enumerate(names)
  ]
  return '.'.join(p for p in parts if p) + '.weight'


def _leaves(
  tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def prelu_keys(params: Mapping[str, Any], num_cab: int) -> list[str]:
  """Keys of the one shared PReLU: `<cab>.body.1.weight` of every PReLU CAB."""
  keys = []
  for path, _ in _leaves(params):
    if (
      len(path) >= 3
      and path[-2] == 'conv1'
      and _CAB_PARENTS.match(path[-3])
      and path[0] != 'processing_block'
    ):
      keys.append(
        torch_key(path, num_cab).replace('body.0.weight', 'body.1.weight')
      )
  return keys


def _numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch tensor
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


FCN_ONLY_PREFIXES = (
  'shallow_feat0.',
  'attention_down.',
  'attention_up.',
  UNUSED_PREFIX,
)


def architecture(state_dict: Mapping[str, Any]) -> str:
  """'fcn' (the release's Net) or 'mprnet' (MPRNet's deblurring network).

  FCN has the keys of MPRNet plus `shallow_feat0.*`, `attention_down/up.*`
  and `stage1_decoder1.*`; any of them makes a state_dict FCN's. Whether the
  rest fits is checked key by key by `torch_to_flax`.
  """
  keys = [k.removeprefix('module.') for k in state_dict]
  fcn = any(k.startswith(FCN_ONLY_PREFIXES) for k in keys)
  return 'fcn' if fcn else 'mprnet'


def infer_model_config(state_dict: Mapping[str, Any]) -> dict:
  """The FCN fields of an FCN or MPRNet state_dict, read off keys and shapes.

  For MPRNet they include use_pb=False, use_efem=False.
  """
  sd = {k.removeprefix('module.'): v for k, v in state_dict.items()}
  kind = architecture(sd)
  try:
    shallow = np.shape(sd['shallow_feat1.0.weight'])
    squeeze = np.shape(sd['shallow_feat1.1.CA.conv_du.0.weight'])
    down = np.shape(sd['stage1_encoder.down12.down.1.weight'])
    concat23 = np.shape(sd['concat23.weight'])
  except KeyError as e:
    raise ConversionError(
      f'not an FCN or MPRNet state_dict: missing key {e.args[0]}'
    ) from None
  n_feat = int(shallow[0])
  num_cab = sum(
    1
    for k in sd
    if re.fullmatch(
      r'stage3_orsnet\.orb1\.body\.\d+\.CA\.conv_du\.0\.weight', k
    )
  )
  fields = dict(
    n_feat=n_feat,
    scale_unetfeats=int(down[0]) - n_feat,
    scale_orsnetfeats=int(concat23[0]) - n_feat,
    num_cab=num_cab,
    kernel_size=int(shallow[-1]),
    reduction=n_feat // int(squeeze[0]),
  )
  if kind == 'mprnet':
    fields.update(use_pb=False, use_efem=False)
  return fields


def torch_to_flax(
  state_dict: Mapping[str, Any], model: Optional[FCN] = None
) -> dict:
  """Maps an FCN or MPRNet state_dict onto FCN parameters.

  Args:
    state_dict: the release's `Net.state_dict()` or MPRNet's (torch tensors or
      numpy arrays), with or without DataParallel's `module.` prefix.
    model: the target FCN; by default the one whose hyper-parameters the
      state_dict's shapes imply.

  Returns:
    The Flax params (numpy float32).

  Raises:
    ConversionError: naming any missing or unexpected key (only the unused
      `stage1_decoder1.*` keys are skipped), any shape mismatch, or PReLU
      copies that disagree.
  """
  sd = {k.removeprefix('module.'): v for k, v in state_dict.items()}
  model = model or FCN(**infer_model_config(sd))
  shapes = checkpoint.abstract_params(model)
  params: dict = {}
  used = set()

  def put(path, value):
    node = params
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value

  def take(key):
    if key not in sd:
      raise ConversionError(f'missing key in the state_dict: {key}')
    used.add(key)
    return _numpy(sd[key])

  shape_tree = jax.tree.map(lambda s: tuple(s.shape), shapes)
  for path, shape in _leaves(shape_tree):
    if path == ('prelu',):
      copies = {k: take(k) for k in prelu_keys(shape_tree, model.num_cab)}
      first = next(iter(copies.values()))
      for k, v in copies.items():
        if v.shape != tuple(shape) or not np.array_equal(v, first):
          raise ConversionError(
            f'PReLU copy {k} differs from the others (the release shares one)'
          )
      put(path, first)
      continue
    key = torch_key(path, model.num_cab)
    value = take(key)
    hwio = (shape[3], shape[2], shape[0], shape[1])
    if value.shape != hwio:
      raise ConversionError(
        f'shape mismatch for {key}: state_dict has {value.shape}, the model expects {hwio}'
      )
    put(path, value.transpose(2, 3, 1, 0))
  extra = sorted(
    k for k in sd if k not in used and not k.startswith(UNUSED_PREFIX)
  )
  if extra:
    raise ConversionError(
      f'unexpected key in the state_dict: {extra[0]}'
      + (f' (and {len(extra) - 1} more)' if len(extra) > 1 else '')
    )
  return params


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (only when run as a program; see predict.py)."""
  flags.DEFINE_string(
    'torch_checkpoint', None, "The FCN release's or MPRNet's .pth file."
  )
  flags.DEFINE_string(
    'workdir', None, 'Directory to write the converted checkpoint to.'
  )


def load_torch_state_dict(path: str) -> tuple[dict, dict]:
  """(state_dict, other entries) of a file saved like the release's train.py."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConversionError(
      'reading .pth files needs PyTorch: pip install torch '
      '(only fcn_jax.convert uses it)'
    ) from None
  try:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(
      f'{path}: not a PyTorch checkpoint ({type(e).__name__}: '
      f'{str(e).splitlines()[0] if str(e) else ""})'
    ) from None
  if not isinstance(ckpt, Mapping):
    raise ConversionError(
      f'{path}: expected a dict with a state_dict, got {type(ckpt).__name__}'
    )
  if 'state_dict' in ckpt:
    return dict(ckpt['state_dict']), {
      k: v for k, v in ckpt.items() if k == 'epoch'
    }
  return dict(ckpt), {}


def convert_file(torch_checkpoint: str, workdir: str) -> dict:
  """Converts `torch_checkpoint` into DIR/checkpoints/0; returns the config written."""
  if not os.path.isfile(torch_checkpoint):
    raise ConversionError(f'{torch_checkpoint}: no such file')
  if (epath.Path(workdir) / checkpoint.LATEST).is_dir() and (
    checkpoint.make_manager(workdir, read_only=True).latest_step() is not None
  ):
    raise ConversionError(
      f'{workdir} already holds a checkpoint; choose an empty --workdir'
    )
  state_dict, extra = load_torch_state_dict(torch_checkpoint)
  model_config = infer_model_config(state_dict)
  params = torch_to_flax(state_dict, FCN(**model_config))
  config = {'model': dict(model_config, dtype='float32')}
  mngr = checkpoint.make_manager(workdir)
  checkpoint.save(
    mngr,
    0,
    params=params,
    config=config,
    meta=dict(
      source=os.path.abspath(torch_checkpoint),
      architecture=architecture(state_dict),
      **extra,
    ),
  )
  mngr.wait_until_finished()
  mngr.close()
  return config


def main(argv):
  del argv
  if not FLAGS.torch_checkpoint or not FLAGS.workdir:
    sys.exit('error: --torch_checkpoint and --workdir are required')
  try:
    config = convert_file(FLAGS.torch_checkpoint, FLAGS.workdir)
  except ConversionError as e:
    sys.exit(f'error: {e}')
  kind = 'MPRNet' if config['model'].get('use_pb') is False else 'FCN'
  print(
    f'wrote {FLAGS.workdir}/{checkpoint.LATEST}/0 '
    f'({kind}: model {config["model"]})'
  )


def cli() -> None:
  """The `fcn-convert` command, the same as `python -m fcn_jax.convert`."""
  define_flags()
  app.run(main)


if __name__ == '__main__':
  cli()
