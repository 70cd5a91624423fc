"""Parity with MPRNet's own PyTorch code, when a checkout of it is available.

Set MPRNET_REPO to a checkout of github.com/swz30/MPRNet (with PyTorch
installed) to run: its deblurring network (Deblurring/MPRNet.py) with random
weights, saved like its train.py and converted by fcn_jax.convert, must give
all three outputs within 1e-4 at batch size 1 in float32, and the PNG of its
test.py path.
"""

import os
import sys

import jax
import numpy as np
import pytest

from fcn_jax import checkpoint
from fcn_jax import convert
from fcn_jax import models

REPO = os.environ.get('MPRNET_REPO')
DEBLURRING = os.path.join(REPO or '', 'Deblurring')
torch = pytest.importorskip('torch')
pytestmark = [
  pytest.mark.parity,
  pytest.mark.skipif(
    not REPO or not os.path.isfile(os.path.join(DEBLURRING, 'MPRNet.py')),
    reason='set MPRNET_REPO to a checkout of github.com/swz30/MPRNet',
  ),
]


def mprnet_class():
  sys.path.insert(0, DEBLURRING)
  try:
    from MPRNet import MPRNet  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(DEBLURRING)
  return MPRNet


def random_mprnet(seed: int):
  torch.manual_seed(seed)
  net = mprnet_class()().eval()
  with torch.no_grad():  # PReLU starts at 0.25 everywhere; move it
    net.shallow_feat1[1].body[1].weight.fill_(0.2)
  return net


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """A random MPRNet saved as published ({'state_dict'}, DataParallel keys) and
  converted with the converter's file path."""
  net = random_mprnet(0)
  path = tmp_path_factory.mktemp('mprnet')
  pth = path / 'model_deblurring.pth'
  torch.save(
    {
      'epoch': 1,
      'state_dict': {'module.' + k: v for k, v in net.state_dict().items()},
    },
    pth,
  )
  config = convert.convert_file(str(pth), str(path / 'run'))
  return net, str(path / 'run'), config


def test_recognised_as_mprnet(converted):
  net, workdir, config = converted
  assert convert.architecture(net.state_dict()) == 'mprnet'
  assert config['model']['use_pb'] is False
  assert config['model']['use_efem'] is False
  model = models.model_from_config(checkpoint.load_params(workdir)[1])
  assert (model.use_pb, model.use_efem) == (False, False)
  assert (model.n_feat, model.num_cab) == (96, 8)


@pytest.mark.parametrize('height,width', [(64, 64), (48, 80)])
def test_mprnet_outputs_match(converted, height, width):
  net, workdir, _ = converted
  x = np.random.default_rng(0).random((1, 3, height, width), np.float32)
  with torch.no_grad():
    expected = [
      o.numpy().transpose(0, 2, 3, 1) for o in net(torch.from_numpy(x))
    ]
  params, config = checkpoint.load_params(workdir)
  model = models.model_from_config(config, precision='highest')
  outputs = jax.jit(model.apply)({'params': params}, x.transpose(0, 2, 3, 1))
  for stage, (ours, theirs) in enumerate(zip(outputs, expected)):
    diff = float(np.abs(np.asarray(ours) - theirs).max())
    print(f'MPRNet {height}x{width} output {stage}: max |diff| = {diff:.2e}')
    assert diff <= 1e-4, (stage, diff)


def test_same_png_as_mprnet_test_script(tmp_path):
  """MPRNet's test.py path (clamp, img_as_ubyte) against fcn_jax.load."""
  import fcn_jax  # pylint: disable=g-import-not-at-top
  from skimage import img_as_ubyte  # pylint: disable=g-import-not-at-top

  net = random_mprnet(1)
  with torch.no_grad():  # keep outputs inside [0, 1]: a PNG not all clipped
    net.tail.weight.mul_(0.01)
  pth = tmp_path / 'model_deblurring.pth'
  torch.save({'state_dict': net.state_dict()}, pth)  # keys without 'module.'
  convert.convert_file(str(pth), str(tmp_path / 'run'))
  image = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
  x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
  with torch.no_grad():
    restored = torch.clamp(net(x)[0], 0, 1)[0].permute(1, 2, 0).numpy()
  theirs = img_as_ubyte(restored)
  ours = fcn_jax.load(str(tmp_path / 'run'))(image)  # as predict does
  assert ours.dtype == np.uint8 and ours.shape == theirs.shape
  diff = np.abs(ours.astype(int) - theirs.astype(int))
  print(
    f'MPRNet PNG levels differing: {(diff > 0).sum()} of {diff.size} '
    f'(max {diff.max()})'
  )
  assert 0 < theirs.std() and diff.max() <= 1 and (diff > 0).mean() < 1e-3
