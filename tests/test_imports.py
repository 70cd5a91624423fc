"""The model, losses, metrics, train step and inference import without TensorFlow."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_core_modules_import_without_tensorflow():
  code = (
    "import sys\n"
    "sys.modules['tensorflow'] = None  # any import of it fails\n"
    "import fcn_jax, fcn_jax.models, fcn_jax.losses, fcn_jax.metrics\n"
    "import fcn_jax.cpu, fcn_jax.models.presets\n"
    "import fcn_jax.train, fcn_jax.inference, fcn_jax.checkpoint\n"
    "import fcn_jax.evaluators, fcn_jax.image_io, fcn_jax.train_state\n"
    "import fcn_jax.distributed, configs.default, configs.tiny\n"
    "import fcn_jax.predict, fcn_jax.convert, fcn_jax.export\n"
    "assert callable(fcn_jax.train.train_step)\n"
    "print('ok')\n"
  )
  proc = subprocess.run(
    [sys.executable, '-c', code],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[
    -2000:
  ]
