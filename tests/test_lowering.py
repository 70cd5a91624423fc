"""The full model's train and eval steps lower for GPU and TPU from this CPU.

Lowering only (no compile): fails on an op without a lowering for the
platform, on any float64, or on a host callback in the StableHLO.
"""

import re

import pytest

from configs import default
from fcn_jax import memory

CALLBACKS = re.compile(r'callback|host_compute|py_func', re.IGNORECASE)


@pytest.fixture(scope='module')
def config():
  config = default.get_config()  # the published model
  config.model.dtype = 'bfloat16'
  return config


def _check(text: str) -> None:
  assert 'f64' not in text, 'float64 in the lowered step'
  targets = re.findall(r'custom_call_target\s*=\s*"([^"]+)"', text)
  targets += re.findall(r'stablehlo\.custom_call\s+@(\w+)', text)
  bad = [t for t in targets if CALLBACKS.search(t)]
  assert not bad, f'host callbacks: {bad}'


@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
def test_train_and_eval_steps_lower(config, platform):
  train = memory.lower_train_step(config, 1, 64, lowering_platforms=(platform,))
  _check(train.as_text())
  evaluate = memory.lower_eval_step(
    config, 1, (64, 64), lowering_platforms=(platform,)
  )
  _check(evaluate.as_text())
