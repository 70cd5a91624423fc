"""Parity with the authors' PyTorch `Net`, when a checkout of it is available.

Set FCN_OFFICIAL_REPO to a checkout of github.com/XinyueZhangqdu/FCN (with
PyTorch installed) to run: the official Net with random weights, converted,
must give all three outputs within 1e-4 at batch size 1 in float32.
"""

import os
import sys
import types

import jax
import numpy as np
import pytest

from fcn_jax import convert
from fcn_jax.models import FCN

REPO = os.environ.get('FCN_OFFICIAL_REPO')
torch = pytest.importorskip('torch')
pytestmark = [
  pytest.mark.parity,
  pytest.mark.skipif(
    not REPO or not os.path.isfile(os.path.join(REPO or '', 'Net.py')),
    reason='set FCN_OFFICIAL_REPO to a checkout of the official FCN repository',
  ),
]


def official_net_class():
  if 'matplotlib' not in sys.modules:  # Net.py imports pyplot and never uses it
    try:
      import matplotlib.pyplot  # noqa: F401
    except ImportError:
      mpl = types.ModuleType('matplotlib')
      mpl.pyplot = types.ModuleType('matplotlib.pyplot')
      sys.modules.update({'matplotlib': mpl, 'matplotlib.pyplot': mpl.pyplot})
  sys.path.insert(0, REPO)
  try:
    from Net import Net  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(REPO)
  return Net


@pytest.mark.parametrize('height,width', [(64, 64), (48, 80)])
def test_official_outputs_match(height, width):
  torch.manual_seed(0)
  net = official_net_class()().eval()
  # The release's PReLU starts at 0.25 everywhere; move it so a wrong mapping shows.
  with torch.no_grad():
    net.stage1_encoder.encoder_level1[0].body[1].weight.fill_(0.2)
  x = np.random.default_rng(0).random((1, 3, height, width), np.float32)
  with torch.no_grad():
    expected = [
      o.numpy().transpose(0, 2, 3, 1) for o in net(torch.from_numpy(x))
    ]
  params = convert.torch_to_flax(net.state_dict())
  model = FCN(precision='highest')
  outputs = jax.jit(model.apply)({'params': params}, x.transpose(0, 2, 3, 1))
  for stage, (ours, theirs) in enumerate(zip(outputs, expected)):
    diff = float(np.abs(np.asarray(ours) - theirs).max())
    print(f'{height}x{width} output {stage}: max |diff| = {diff:.2e}')
    assert diff <= 1e-4, (stage, diff)


def test_same_png_as_the_release_test_script():
  """The release's test.py path (clamp, img_as_ubyte) against our Deblurrer."""
  from skimage import img_as_ubyte  # pylint: disable=g-import-not-at-top
  from fcn_jax import inference  # pylint: disable=g-import-not-at-top

  torch.manual_seed(1)
  net = official_net_class()().eval()
  with (
    torch.no_grad()
  ):  # keep outputs inside [0, 1] so the PNG is not all clipped
    net.tail.weight.mul_(0.01)
    net.sam23.conv2.weight.mul_(0.01)
  image = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
  x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
  with torch.no_grad():
    theirs = img_as_ubyte(
      torch.clamp(net(x)[0], 0, 1)[0].permute(1, 2, 0).numpy()
    )
  deblur = inference.Deblurrer(
    FCN(precision='highest'), convert.torch_to_flax(net.state_dict())
  )
  ours = deblur(image)
  assert ours.dtype == np.uint8 and ours.shape == theirs.shape
  diff = np.abs(ours.astype(int) - theirs.astype(int))
  print(
    f'PNG levels differing: {(diff > 0).sum()} of {diff.size} (max {diff.max()})'
  )
  # Outputs agree to ~1e-6, so only values within 1e-6 of a rounding tie may flip.
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
