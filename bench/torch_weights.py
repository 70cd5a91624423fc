"""Our FCN parameters as the authors' PyTorch state_dict.

The inverse of `fcn_jax.convert.torch_to_flax`, through the same key map
(`convert.torch_key`, `convert.prelu_keys`). The benches that run the authors'
network load it; the tests of the conversion write their .pth files with it.
"""

from __future__ import annotations

from typing import Any, Mapping

from flax import traverse_util
import numpy as np

from fcn_jax import convert


def flax_to_torch(
  params: Mapping[str, Any], num_cab: int
) -> dict[str, np.ndarray]:
  """Our params as an official state_dict (numpy, OIHW), without stage1_decoder1."""
  out = {}
  for path, value in traverse_util.flatten_dict(dict(params)).items():
    value = np.asarray(value)
    if path == ('prelu',):
      for key in convert.prelu_keys(params, num_cab):
        out[key] = value.copy()
    else:
      out[convert.torch_key(path, num_cab)] = value.transpose(3, 2, 0, 1)
  return out
