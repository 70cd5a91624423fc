"""Shared fixtures: a tiny FCN whose compiled functions the tests reuse."""

import functools

import jax
import pytest

from fcn_jax.models import FCN, init_params
from fcn_jax.models.presets import TINY


@pytest.fixture(scope='session')
def tiny_model():
  return FCN(**TINY)


@pytest.fixture(scope='session')
def tiny_params(tiny_model):
  return jax.jit(functools.partial(init_params, tiny_model))(jax.random.key(0))


@functools.lru_cache(maxsize=None)
def jitted_apply(model: FCN):
  """One jitted apply per model, so tests share compilations."""
  return jax.jit(model.apply)
