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


def test_only_the_data_package_imports_tensorflow():
  """TensorFlow, TFDS and the builders are imported in fcn_jax/data/ only."""
  import ast  # pylint: disable=g-import-not-at-top

  package = os.path.join(ROOT, 'fcn_jax')
  tf_modules = ('tensorflow', 'tensorflow_datasets', 'tfds_gopro')
  found = {}
  for folder, _, files in os.walk(package):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
          names = [node.module]
        else:
          continue
        if any(n.split('.')[0] in tf_modules for n in names):
          found.setdefault(os.path.relpath(path, ROOT), []).extend(names)
  outside = {
    p: n for p, n in found.items() if not p.startswith('fcn_jax/data/')
  }
  assert not outside, outside
  assert 'fcn_jax/data/datasets.py' in found  # The check sees imports.
