"""The converter from the release's state_dict and its command line."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bench import torch_weights
from fcn_jax import checkpoint
from fcn_jax import convert
from fcn_jax import models
from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def official_state_dict(tiny_params):
  """A state_dict in the release's key names and OIHW layout, as saved by
  DataParallel, including the unused stage1_decoder1 keys."""
  sd = {
    'module.' + k: v
    for k, v in torch_weights.flax_to_torch(
      tiny_params, TINY['num_cab']
    ).items()
  }
  sd['module.stage1_decoder1.decoder_level1.0.body.0.weight'] = np.zeros(
    (8, 8, 3, 3), np.float32
  )
  return sd


def _equal_trees(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact(tiny_params, official_state_dict):
  assert convert.infer_model_config(official_state_dict) == TINY
  _equal_trees(convert.torch_to_flax(official_state_dict), tiny_params)
  # The same keys without the DataParallel prefix.
  bare = {k.removeprefix('module.'): v for k, v in official_state_dict.items()}
  _equal_trees(convert.torch_to_flax(bare), tiny_params)


def test_release_key_names(official_state_dict):
  keys = {k.removeprefix('module.') for k in official_state_dict}
  for key in (
    'shallow_feat0.1.CA.conv_du.2.weight',
    'shallow_feat1.1.body.1.weight',
    'stage1_encoder.encoder_level1.0.body.0.weight',
    'stage2_encoder.csff_dec3.weight',
    'stage1_decoder.up21.up.1.weight',
    'stage3_orsnet.orb3.body.1.weight',
    'stage3_orsnet.up_enc2.1.up.1.weight',
    'attention_down.weight',
    'sam23.conv3.weight',
    'tail.weight',
  ):
    assert key in keys, key
  assert 'shallow_feat0.1.body.1.weight' not in keys  # SELU has no parameter
  assert official_state_dict['module.tail.weight'].shape == (
    3,
    12,
    3,
    3,
  )  # OIHW


@pytest.mark.parametrize(
  'edit,match',
  [
    (lambda sd: sd.pop('module.tail.weight'), 'missing key.*tail.weight'),
    (
      lambda sd: sd.__setitem__('module.extra.weight', np.zeros(1)),
      'unexpected key.*extra.weight',
    ),
    (
      lambda sd: sd.__setitem__(
        'module.sam12.conv1.weight', np.zeros((8, 8, 3, 3))
      ),
      'shape mismatch for sam12.conv1.weight',
    ),
    (
      lambda sd: sd.__setitem__(
        'module.stage2_decoder.skip_attn1.body.1.weight', np.ones(1)
      ),
      'PReLU copy stage2_decoder.skip_attn1.body.1.weight',
    ),
  ],
)
def test_errors_name_the_key(official_state_dict, edit, match):
  sd = dict(official_state_dict)
  edit(sd)
  with pytest.raises(convert.ConversionError, match=match):
    convert.torch_to_flax(sd)


def test_convert_file_writes_a_loadable_checkpoint(
  tmp_path, tiny_params, official_state_dict
):
  torch = pytest.importorskip('torch')
  pth = tmp_path / 'model_best.pth'
  torch.save(
    {
      'epoch': 3,
      'optimizer': {},
      'state_dict': {
        k: torch.from_numpy(np.array(v)) for k, v in official_state_dict.items()
      },
    },
    pth,
  )
  workdir = tmp_path / 'run'
  convert.convert_file(str(pth), str(workdir))
  params, config = checkpoint.load_params(str(workdir))
  _equal_trees(params, tiny_params)
  assert config['model']['n_feat'] == TINY['n_feat']
  assert models.model_from_config(config).num_cab == TINY['num_cab']
  # A second conversion into the same workdir is refused; the first stays.
  with pytest.raises(
    convert.ConversionError, match='already holds a checkpoint'
  ):
    convert.convert_file(str(pth), str(workdir))
  _equal_trees(checkpoint.load_params(str(workdir))[0], tiny_params)


def test_convert_file_errors(tmp_path, monkeypatch):
  with pytest.raises(
    convert.ConversionError, match='missing.pth: no such file'
  ):
    convert.convert_file(str(tmp_path / 'missing.pth'), str(tmp_path / 'a'))
  bad = tmp_path / 'notes.pth'
  bad.write_text('not a checkpoint')
  if 'torch' in sys.modules or _has_torch():
    with pytest.raises(
      convert.ConversionError, match='notes.pth: not a PyTorch checkpoint'
    ):
      convert.convert_file(str(bad), str(tmp_path / 'b'))
  assert not (tmp_path / 'b').exists()
  monkeypatch.setitem(
    sys.modules, 'torch', None
  )  # as if PyTorch were not installed
  with pytest.raises(convert.ConversionError, match='pip install torch'):
    convert.convert_file(str(bad), str(tmp_path / 'c'))


def _has_torch():
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    return True
  except ImportError:
    return False


# MPRNet (github swz30/MPRNet, Deblurring/MPRNet.py): FCN without PB and EFEM.
MPRNET = dict(TINY, use_pb=False, use_efem=False)


@pytest.fixture(scope='module')
def mprnet_params():
  model = FCN(**MPRNET)
  return jax.jit(functools.partial(init_params, model))(jax.random.key(1))


@pytest.fixture(scope='module')
def mprnet_state_dict(mprnet_params):
  """An MPRNet state_dict (its key names, OIHW) as its train.py saves it."""
  return {
    'module.' + k: v
    for k, v in torch_weights.flax_to_torch(
      mprnet_params, TINY['num_cab']
    ).items()
  }


def test_mprnet_recognised_and_round_trip_exact(
  mprnet_params, mprnet_state_dict, official_state_dict
):
  assert convert.architecture(mprnet_state_dict) == 'mprnet'
  assert convert.architecture(official_state_dict) == 'fcn'
  assert convert.infer_model_config(mprnet_state_dict) == dict(
    MPRNET, kernel_size=3, reduction=4
  )
  _equal_trees(convert.torch_to_flax(mprnet_state_dict), mprnet_params)
  bare = {k.removeprefix('module.'): v for k, v in mprnet_state_dict.items()}
  _equal_trees(convert.torch_to_flax(bare), mprnet_params)
  keys = set(bare)
  # MPRNet's names: FCN's without shallow_feat0 and attention_down/up.
  assert {
    'sam12.conv1.weight',
    'stage3_orsnet.orb1.body.1.weight',
    'shallow_feat1.1.body.1.weight',
    'concat12.weight',
  } <= keys
  assert not any(k.startswith(convert.FCN_ONLY_PREFIXES) for k in keys)
  fcn_keys = {k.removeprefix('module.') for k in official_state_dict}
  assert keys == {
    k for k in fcn_keys if not k.startswith(convert.FCN_ONLY_PREFIXES)
  }


@pytest.mark.parametrize(
  'edit,match',
  [
    (
      lambda sd: sd.pop('module.sam23.conv3.weight'),
      r'missing key in the state_dict: sam23.conv3.weight$',
    ),
    (
      lambda sd: sd.__setitem__('module.stage4.weight', np.zeros(1)),
      r'unexpected key in the state_dict: stage4.weight$',
    ),
    (
      lambda sd: sd.__setitem__(
        'module.attention_up.weight',  # half an FCN
        np.zeros((8, 4, 1, 1)),
      ),
      r'missing key in the state_dict: shallow_feat0\.',
    ),
    (
      lambda sd: sd.pop('module.shallow_feat1.0.weight'),
      r'not an FCN or MPRNet state_dict: missing key shallow_feat1.0.weight$',
    ),
  ],
)
def test_mprnet_errors_name_the_key(mprnet_state_dict, edit, match):
  sd = dict(mprnet_state_dict)
  edit(sd)
  with pytest.raises(convert.ConversionError, match=match):
    convert.torch_to_flax(sd)


def test_neither_fcn_nor_mprnet_is_one_line():
  with pytest.raises(
    convert.ConversionError,
    match=r'^not an FCN or MPRNet state_dict: missing key '
    r'shallow_feat1.0.weight$',
  ):
    convert.torch_to_flax({'conv1.weight': np.zeros((8, 3, 3, 3))})


def test_convert_mprnet_file_then_predict(
  tmp_path, mprnet_params, mprnet_state_dict
):
  torch = pytest.importorskip('torch')
  pth = tmp_path / 'model_deblurring.pth'
  torch.save(
    {
      'state_dict': {
        k: torch.from_numpy(np.array(v)) for k, v in mprnet_state_dict.items()
      }
    },
    pth,
  )
  workdir = tmp_path / 'mprnet'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'fcn_jax.convert',
      f'--torch_checkpoint={pth}',
      f'--workdir={workdir}',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'MPRNet' in out.stdout
  params, config = checkpoint.load_params(str(workdir))
  _equal_trees(params, mprnet_params)
  assert config['model']['use_pb'] is False
  assert config['model']['use_efem'] is False
  model = models.model_from_config(config)
  image = (np.random.default_rng(0).random((20, 28, 3)) * 255).astype(np.uint8)
  import fcn_jax  # pylint: disable=g-import-not-at-top
  from fcn_jax import inference  # pylint: disable=g-import-not-at-top

  np.testing.assert_array_equal(
    fcn_jax.load(str(workdir))(image),
    inference.Deblurrer(model, mprnet_params)(image),
  )
