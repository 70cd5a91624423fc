"""FCN in Flax linen. The module tree follows the paper's Fig. 2; see `fcn.py`."""

# compiler_options lives in fcn_jax.cpu; re-exported for existing callers.
from fcn_jax.cpu import compiler_options
from fcn_jax.models.fcn import FCN, init_params

__all__ = ["FCN", "compiler_options", "init_params"]
