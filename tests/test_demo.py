"""The demo config runs end to end (a smoke test at a reduced step count)."""

import json
import os

import pytest

from configs import demo
from fcn_jax import train


@pytest.mark.slow
def test_demo_config_smoke(tmp_path):
  config = demo.get_config()
  config.data_dir = str(tmp_path / 'data')
  config.train_dataset = 'synthetic_blur/tiny:train'  # the demo's data, smaller
  config.eval_datasets = ('synthetic_blur/tiny:test',)
  config.update(
    num_train_steps=2,
    eval_every_steps=0,
    checkpoint_every_steps=2,
    log_every_steps=1,
    batch_size=2,
    eval_batch_size=2,
    crop_size=32,
  )
  workdir = tmp_path / 'demo'
  train.train_and_evaluate(config, str(workdir))
  folder = workdir / 'eval' / 'synthetic_blur_tiny_test'
  summary = json.loads((folder / 'summary.json').read_text())
  assert summary['num_images'] == 6
  assert {'psnr', 'input_psnr', 'ssim_matlab', 'ssim_per_channel'} <= set(
    summary
  )
  assert os.path.getsize(folder / 'grid.png') > 0
