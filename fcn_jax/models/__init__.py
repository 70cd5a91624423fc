"""FCN in Flax linen. The module tree follows the paper's Fig. 2; see `fcn.py`."""
from fcn_jax.models.fcn import FCN, init_params

__all__ = ["FCN", "init_params"]
