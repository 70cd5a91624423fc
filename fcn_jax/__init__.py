"""fcn-jax: FCN ("A feature catcher with excellent deblurring effects") in JAX/Flax.

Nothing here imports TensorFlow; only `fcn_jax.data` and `tfds_gopro` do.
"""


def load(workdir: str, **kwargs):
  """Loads the checkpoint of `workdir` for notebook use; see `fcn_jax.inference.Deblurrer`."""
  from fcn_jax import inference  # pylint: disable=g-import-not-at-top

  return inference.load(workdir, **kwargs)
