"""pyproject.toml: the installed package is this checkout, its dependencies
agree with the pins, every package is listed, the console commands run, and
no module puts the repository on sys.path itself."""

import glob
import os
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _pyproject() -> dict:
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def _pins(path: str) -> dict[str, str]:
  """{name: version} of the `name==version` lines of a requirements file."""
  pins = {}
  with open(path) as f:
    for line in f:
      line = line.split('#', 1)[0].strip()
      if line and not line.startswith('-'):
        name, version = line.split('==')
        pins[canonicalize_name(name)] = version
  return pins


def test_dependencies_are_the_pinned_packages():
  """The same names as requirements.txt; each pin meets pyproject's bound."""
  deps = {
    canonicalize_name(r.name): r
    for r in map(Requirement, _pyproject()['project']['dependencies'])
  }
  pins = _pins(os.path.join(ROOT, 'requirements.txt'))
  assert sorted(deps) == sorted(pins)
  for name, version in pins.items():
    assert deps[name].specifier.contains(version), (name, version)


def test_every_package_is_listed():
  found = set()
  for top in ('configs', 'fcn_jax', 'tfds_gopro'):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      if '__init__.py' in files:
        found.add(os.path.relpath(folder, ROOT).replace(os.sep, '.'))
  assert sorted(_pyproject()['tool']['setuptools']['packages']) == sorted(found)


def test_installed_package_is_this_checkout(tmp_path):
  """Imported from elsewhere (as by `tfds build`), the packages are these."""
  code = (
    'import importlib.util\n'
    'for name in ("configs", "fcn_jax", "tfds_gopro"):\n'
    '  spec = importlib.util.find_spec(name)\n'
    '  print(*(spec.submodule_search_locations if spec else [None]))\n'
  )
  proc = subprocess.run(
    [sys.executable, '-c', code],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  expected = [
    os.path.join(ROOT, name) for name in ('configs', 'fcn_jax', 'tfds_gopro')
  ]
  assert proc.stdout.split() == expected, (
    f'{proc.stdout}: not this checkout; run `pip install -e .` in {ROOT}'
  )


def test_console_commands(tmp_path):
  """fcn-predict, fcn-convert and fcn-export: the modules' command lines."""
  expected = {
    'fcn-predict': 'error: --workdir, --input and --output are required',
    'fcn-convert': 'error: --torch_checkpoint and --workdir are required',
    'fcn-export': 'error: --workdir and --output are required',
  }
  assert _pyproject()['project']['scripts'] == {
    'fcn-predict': 'fcn_jax.predict:cli',
    'fcn-convert': 'fcn_jax.convert:cli',
    'fcn-export': 'fcn_jax.export:cli',
  }
  procs = {
    name: subprocess.Popen(
      [os.path.join(BIN, name)],
      cwd=tmp_path,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'),
    )
    for name in expected
  }
  try:
    stderr = {
      name: proc.communicate(timeout=120)[1] for name, proc in procs.items()
    }
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for name, proc in procs.items():
    assert proc.returncode == 1, (name, stderr[name][-2000:])
    last_line = stderr[name].strip().splitlines()[-1]
    assert last_line == expected[name], stderr[name][-2000:]


def test_no_module_edits_sys_path():
  """The installed package, not sys.path edits, makes the imports work."""
  edits = []
  for top in ('bench', 'configs', 'fcn_jax', 'tfds_gopro'):
    pattern = os.path.join(ROOT, top, '**', '*.py')
    for path in glob.glob(pattern, recursive=True):
      with open(path) as f:
        for number, line in enumerate(f, 1):
          if line.lstrip().startswith(('sys.path.insert', 'sys.path.append')):
            edits.append(f'{os.path.relpath(path, ROOT)}:{number}')
  assert not edits, edits
