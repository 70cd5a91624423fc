"""FCN in Flax linen. The module tree follows the paper's Fig. 2; see `fcn.py`."""
from fcn_jax.models.fcn import FCN, init_params
from fcn_jax.models.layers import compiler_options

__all__ = ["FCN", "compiler_options", "init_params"]
