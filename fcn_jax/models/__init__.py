"""FCN in Flax linen. The module tree follows the paper's Fig. 2; see `fcn.py`."""

from fcn_jax.models.fcn import FCN, init_params


def model_from_config(config: dict, **overrides) -> FCN:
  """The FCN described by `config['model']` (JSON lists become tuples)."""
  fields = {
    k: tuple(v) if isinstance(v, list) else v
    for k, v in dict(config['model']).items()
  }
  fields.update(overrides)
  return FCN(**fields)


__all__ = ['FCN', 'init_params', 'model_from_config']
