"""Code style: `make lint`'s ruff checks pass, with pyproject.toml's settings.

`ruff format .` and `ruff check --fix .` fix what they can.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'pyproject.toml')


def ruff(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'ruff', *args, '--no-cache'],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )


def test_ruff_check():
  proc = ruff('check', '.')
  assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_ruff_format():
  proc = ruff('format', '--check', '.')
  assert proc.returncode == 0, (
    'run `ruff format .`\n' + proc.stdout[-5000:] + proc.stderr[-2000:]
  )


def test_settings_catch_what_they_should(tmp_path):
  """2-space indent, 80 columns, quotes kept; unused imports and names fail."""
  good = textwrap.dedent('''\
      """A module in the project's style."""

      import os


      def join(a: str, b: str = "b") -> str:
        if a:
          return os.path.join(a, 'x', b)
        return b
      ''')
  files = {
    'good.py': good,
    'four_spaces.py': good.replace('\n  ', '\n    '),
    # 84 columns: fine at ruff's default of 88, too long at 80.
    'long_line.py': good.replace("'x', b", "'x', " + "'y', " * 10 + 'b'),
    'unused_import.py': 'import sys\n',
    'undefined_name.py': 'print(name)\n',
  }
  for name, text in files.items():
    (tmp_path / name).write_text(text)

  def passes(command: str, name: str) -> bool:
    check = ['--check'] if command == 'format' else []
    proc = ruff(command, *check, '--config', CONFIG, name, cwd=str(tmp_path))
    return proc.returncode == 0

  assert passes('check', 'good.py') and passes('format', 'good.py')
  assert not passes('format', 'four_spaces.py')
  assert not passes('format', 'long_line.py')
  assert not passes('check', 'unused_import.py')
  assert not passes('check', 'undefined_name.py')
