"""The documentation names only what exists.

Over README.md, BENCHMARKS.md, CHANGELOG.md and docs/*.md:
* every relative link resolves, and every #anchor names a heading;
* every configs/*.py named exists and loads (with its `:args`, if given);
* every --flag given to a program (main.py, python -m fcn_jax.*, fcn-* commands,
  bench/*.py, examples/*.py) is one that program defines (absl DEFINE_* or
  argparse add_argument, read from its source), and every --config.FIELD is a
  field of the config it is passed with (configs/default.py when none is);
* every shell block is preceded by `<!-- needs: gpu|tpu|cloud|download -->`
  or `<!-- run-by: tests/FILE.py::TEST ... -->`, where each named test exists
  and the named tests' files run every program of the block (`make X` stands
  for its Makefile recipe);
* no page speaks of how the software was made (issue numbers, sessions, ...).

The checks read files only (configs are imported); the last tests plant a
broken link, an unknown flag and the like in a copy and expect them found.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib
import os
import re
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NEEDS = {'gpu', 'tpu', 'cloud', 'download'}
SHELL = {'sh', 'shell', 'bash', 'console'}
# Flags absl's app defines for every program.
ABSL = {
  'help',
  'helpfull',
  'helpshort',
  'helpxml',
  'flagfile',
  'undefok',
  'logtostderr',
  'alsologtostderr',
  'log_dir',
  'verbosity',
  'v',
  'stderrthreshold',
  'showprefixforinfo',
  'only_check_args',
  'pdb',
  'pdb_post_mortem',
  'run_with_pdb',
  'run_with_profiling',
  'profile_file',
  'use_cprofile_for_profiling',
  'logger_levels',
}
# `tfds build`'s flags that the pages name.
TFDS_BUILD = {'manual_dir', 'data_dir', 'config', 'overwrite'}
COMMANDS = {
  'fcn-predict': 'fcn_jax/predict.py',
  'fcn-convert': 'fcn_jax/convert.py',
  'fcn-export': 'fcn_jax/export.py',
}
# Words of a page that speaks of its own making rather than of the software.
MAKING = re.compile(
  r'\bissues?\s*#?\d|\bwork items?\b|\btrials?\b|\bsessions?\b|'
  r'reported with|given a GPU|\bhelpers?\b',
  re.IGNORECASE,
)

_PROGRAM = re.compile(
  r'-m\s+(fcn_jax\.\w+)|(?<![\w/.-])((?:\./)?(?:main|bench/\w+|examples/\w+)'
  r'\.py)\b|\b(fcn-predict|fcn-convert|fcn-export)\b|\btfds\s+build\s+(\S+)'
)
_FLAG = re.compile(r'(?<![\w-])--([A-Za-z_][\w.]*)')
_CONFIG = re.compile(r'(?<![\w/])configs/(\w+)\.py(?::([\w=,.]+))?')
_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
_MARK = re.compile(r'<!--\s*(needs|run-by):\s*(.*?)\s*-->')


def doc_files(root: str) -> list[str]:
  names = ['README.md', 'BENCHMARKS.md', 'CHANGELOG.md']
  paths = [os.path.join(root, n) for n in names]
  paths += sorted(glob.glob(os.path.join(root, 'docs', '*.md')))
  return [p for p in paths if os.path.exists(p)]


def split_markdown(text: str):
  """(prose lines with their numbers, code blocks as (info, first line, text,
  the marker comment right above it or None))."""
  prose, blocks = [], []
  lines = text.splitlines()
  i = 0
  while i < len(lines):
    m = re.match(r'\s*(```+)\s*(\S*)', lines[i])
    if not m:
      prose.append((i + 1, lines[i]))
      i += 1
      continue
    fence, info, start = m.group(1), m.group(2), i
    body = []
    i += 1
    while i < len(lines) and not lines[i].strip().startswith(fence):
      body.append(lines[i])
      i += 1
    i += 1
    above = [l for l in lines[:start] if l.strip()][-1:] or ['']
    mark = _MARK.search(above[0])
    blocks.append((info, start + 1, '\n'.join(body), mark))
  return prose, blocks


def slug(heading: str) -> str:
  """GitHub's anchor for a heading."""
  text = re.sub(r'[`*]|\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip().lower())
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


@functools.lru_cache(maxsize=None)
def anchors(path: str) -> frozenset[str]:
  with open(path) as f:
    prose, _ = split_markdown(f.read())
  seen, out = {}, set()
  for _, line in prose:
    m = re.match(r'#{1,6}\s+(.*)', line)
    if m:
      s = slug(m.group(1))
      n = seen.get(s, 0)
      out.add(s if n == 0 else f'{s}-{n}')
      seen[s] = n + 1
  return frozenset(out)


def check_links(path: str) -> list[str]:
  with open(path) as f:
    prose, _ = split_markdown(f.read())
  problems = []
  for number, line in prose:
    line = re.sub(r'`[^`]*`', '', line)
    for target in _LINK.findall(line):
      if re.match(r'[a-z]+:', target):
        continue
      file, _, anchor = target.partition('#')
      dest = (
        os.path.normpath(os.path.join(os.path.dirname(path), file))
        if file
        else path
      )
      where = f'{os.path.basename(path)}:{number}'
      if not os.path.exists(dest):
        problems.append(f'{where}: link to a missing file: {target}')
      elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
        problems.append(f'{where}: link to a missing anchor: {target}')
  return problems


@functools.lru_cache(maxsize=None)
def program_flags(root: str, program: str) -> frozenset[str] | None:
  """Flags the program's source defines; None if it does not exist."""
  path = os.path.join(root, program)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    tree = ast.parse(f.read())
  names, absl = set(), False
  # Local names of add_argument (`add = parser.add_argument`).
  adders = {'add_argument'} | {
    target.id
    for node in ast.walk(tree)
    if isinstance(node, ast.Assign)
    and isinstance(node.value, ast.Attribute)
    and node.value.attr == 'add_argument'
    for target in node.targets
    if isinstance(target, ast.Name)
  }
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    func = node.func
    name = (
      func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
    )
    strings = [
      a.value
      for a in node.args
      if isinstance(a, ast.Constant) and isinstance(a.value, str)
    ]
    if name.startswith('DEFINE_') and strings:
      absl = True
      names.add(strings[0])
      if name in ('DEFINE_bool', 'DEFINE_boolean'):
        names.add('no' + strings[0])
    elif name in adders:
      names |= {s.lstrip('-') for s in strings if s.startswith('--')}
      names.add('help')
  return frozenset(names | ABSL if absl else names)


def program_file(match: re.Match) -> str | None:
  module, script, command, _ = match.groups()
  if module:
    return module.replace('.', '/') + '.py'
  if script:
    return script.removeprefix('./')
  return COMMANDS.get(command)


def load_config(root: str, name: str, arg: str | None):
  """The ConfigDict configs/<name>.py gives, or an error string."""
  if not os.path.exists(os.path.join(root, 'configs', name + '.py')):
    return f'configs/{name}.py does not exist'
  if root not in sys.path:
    sys.path.insert(0, root)
  try:
    module = importlib.import_module(f'configs.{name}')
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    return f'configs/{name}.py{":" + arg if arg else ""} does not load: {e!r}'


def has_field(config, field: str) -> bool:
  for part in field.split('.'):
    if not hasattr(config, 'keys') or part not in config.keys():
      return False
    config = config[part]
  return True


def logical_lines(text: str) -> list[str]:
  text = re.sub(r'\\\n', ' ', text)
  out = []
  for line in text.splitlines():
    if line.strip().startswith('#'):
      continue
    out += re.split(r'&&|\|\||;|\|(?!\|)', line)
  return out


def check_commands(root: str, text: str, where: str, inline: bool) -> list[str]:
  """Programs, their flags, configs and config fields named in `text`."""
  problems = []
  for segment in logical_lines(text):
    for m in _CONFIG.finditer(segment):
      got = load_config(root, m.group(1), m.group(2))
      if isinstance(got, str):
        problems.append(f'{where}: {got}')
    found = [m for m in _PROGRAM.finditer(segment) if not m.group(4)]
    if not found:
      if inline and segment.strip().startswith('--'):
        flags = _FLAG.findall(segment)
        problems += check_flags(root, None, flags, segment, where)
      continue
    match = found[0]
    program = program_file(match)
    flags = _FLAG.findall(segment[match.end() :])
    problems += check_flags(root, program, flags, segment, where)
  return problems


def all_flags(root: str) -> frozenset[str]:
  programs = ['main.py'] + sorted(
    os.path.relpath(p, root)
    for pattern in ('fcn_jax/*.py', 'bench/*.py', 'examples/*.py')
    for p in glob.glob(os.path.join(root, pattern))
  )
  names = set(TFDS_BUILD)
  for p in programs:
    names |= program_flags(root, p) or set()
  return frozenset(names)


def check_flags(root, program, flags, segment, where) -> list[str]:
  problems = []
  if program is not None:
    known = program_flags(root, program)
    if known is None:
      return [f'{where}: no such program: {program}']
  else:
    known = all_flags(root)
  m = _CONFIG.search(segment)
  for flag in flags:
    if flag.startswith('config.'):
      field = flag.removeprefix('config.')
      if field.isupper() or field.split('.')[-1].isupper():
        continue  # a placeholder such as --config.FIELD
      name, arg = (m.group(1), m.group(2)) if m else ('default', None)
      config = load_config(root, name, arg)
      if not isinstance(config, str) and not has_field(config, field):
        problems.append(
          f'{where}: --{flag}: configs/{name}.py has no field {field!r}'
        )
    elif flag not in known:
      problems.append(
        f'{where}: --{flag}: not a flag of {program or "any program"}'
      )
  return problems


def make_recipe(root: str, target: str) -> str:
  with open(os.path.join(root, 'Makefile')) as f:
    lines = f.read().splitlines()
  recipe, inside = [], False
  for line in lines:
    if re.match(rf'{re.escape(target)}\s*:(?!=)', line):
      inside = True
    elif inside and line.startswith('\t'):
      recipe.append(line.strip())
    elif inside:
      break
  return '\n'.join(recipe)


def source_of_test(root: str, test: str) -> str | None:
  """The source of the file defining the test `path::name`, or None."""
  path, _, name = test.partition('::')
  file = os.path.join(root, path)
  if not name or not os.path.exists(file):
    return None
  with open(file) as f:
    source = f.read()
  defined = {
    n.name
    for n in ast.walk(ast.parse(source))
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
  }
  return source if name in defined else None


def ran_by(program: str, source: str) -> bool:
  """Whether a test file's source runs `program` (a path or `tfds build`)."""
  if program == 'main.py':
    return 'main.py' in source or 'train_and_evaluate' in source
  stem = os.path.splitext(os.path.basename(program))[0]
  if program.startswith('fcn_jax/'):
    return (
      f'fcn_jax.{stem}' in source or f'from fcn_jax import {stem}' in source
    )
  return (
    f"'{stem}.py'" in source or program in source or f'import {stem}' in source
  )


def check_block(root: str, text: str, mark, where: str) -> list[str]:
  if mark is None:
    return [
      f'{where}: shell block with neither <!-- needs: ... --> nor '
      '<!-- run-by: tests/FILE.py::TEST -->'
    ]
  kind, value = mark.group(1), mark.group(2).split()
  if kind == 'needs':
    bad = set(value) - NEEDS
    return (
      [f'{where}: unknown needs: {sorted(bad)}'] if bad or not value else []
    )
  sources = []
  for test in value:
    source = source_of_test(root, test)
    if source is None:
      return [f'{where}: run-by names a missing test: {test}']
    sources.append(source)
  joined = '\n'.join(sources)
  expanded = re.sub(
    r'\bmake\s+(\w+)', lambda m: make_recipe(root, m.group(1)), text
  )
  problems = []
  for m in _PROGRAM.finditer(re.sub(r'\\\n', ' ', expanded)):
    if m.group(4):
      builder = m.group(4).rstrip('/').split('/')[-1]
      ok = 'build' in joined and builder in joined
      program = f'tfds build {m.group(4)}'
    else:
      program = program_file(m)
      ok = program is not None and ran_by(program, joined)
    if not ok:
      problems.append(f'{where}: {program} is not run by {" ".join(value)}')
  return problems


def problems(root: str) -> list[str]:
  out = []
  for path in doc_files(root):
    name = os.path.relpath(path, root)
    with open(path) as f:
      text = f.read()
    out += check_links(path)
    for number, line in enumerate(text.splitlines(), 1):
      if MAKING.search(line):
        out.append(f'{name}:{number}: speaks of its making: {line.strip()}')
    prose, blocks = split_markdown(text)
    for number, line in prose:
      for span in re.findall(r'`([^`]+)`', line):
        out += check_commands(root, span, f'{name}:{number}', inline=True)
    for info, number, body, mark in blocks:
      where = f'{name}:{number}'
      if info in SHELL:
        out += check_block(root, body, mark, where)
        out += check_commands(root, body, where, inline=False)
  return out


def test_the_docs_name_only_what_exists():
  found = problems(ROOT)
  assert not found, '\n'.join(found)


def test_every_page_is_reachable_from_the_readme():
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  for path in doc_files(ROOT)[1:]:
    rel = os.path.relpath(path, ROOT)
    if rel == 'docs/benchmarks-history.md':
      continue  # reached from BENCHMARKS.md
    assert f']({rel}' in readme, f'README.md does not link {rel}'


def planted(tmp_path, edit) -> list[str]:
  """problems() of a copy of the tree whose docs `edit(root)` changed."""
  root = tmp_path / 'repo'
  root.mkdir()
  for name in os.listdir(ROOT):
    if name in ('.git', '.venv', 'docs') or name.endswith('.md'):
      continue
    os.symlink(os.path.join(ROOT, name), root / name)
  for path in doc_files(ROOT):
    dest = root / os.path.relpath(path, ROOT)
    dest.parent.mkdir(exist_ok=True)
    shutil.copy(path, dest)
  for png in glob.glob(os.path.join(ROOT, 'docs', '*.png')):
    shutil.copy(png, root / 'docs')
  edit(root)
  return problems(str(root))


def _append(path, text):
  with open(path, 'a') as f:
    f.write(text)


@pytest.mark.parametrize(
  'plant, expected',
  [
    ('See [the data](docs/dta.md).\n', 'link to a missing file: docs/dta.md'),
    (
      'See [caching](docs/data.md#the-cache).\n',
      'missing anchor: docs/data.md#the-cache',
    ),
    (
      '<!-- needs: gpu -->\n```sh\npython main.py --config=configs/gopro.py'
      ' --workdir=w --num_gpus=8\n```\n',
      '--num_gpus: not a flag of main.py',
    ),
    (
      'Run `python -m fcn_jax.predict --workdir=w --sharpen`.\n',
      '--sharpen: not a flag of fcn_jax/predict.py',
    ),
    (
      'Use `--config.optimizer.lr=1e-3`.\n',
      "configs/default.py has no field 'optimizer.lr'",
    ),
    ('Use `--config=configs/gopro_v2.py`.\n', 'configs/gopro_v2.py does not'),
    (
      '```sh\npython main.py --config=configs/tiny.py --workdir=w\n```\n',
      'shell block with neither',
    ),
    (
      '<!-- run-by: tests/test_train.py::test_no_such_test -->\n'
      '```sh\npython main.py --config=configs/tiny.py --workdir=w\n```\n',
      'missing test: tests/test_train.py::test_no_such_test',
    ),
    (
      '<!-- run-by: tests/test_demo.py::test_demo_config_smoke -->\n'
      '```sh\npython -m fcn_jax.export --workdir=w --output=f\n```\n',
      'fcn_jax/export.py is not run by',
    ),
    ('Measured in session 3 of issue 12.\n', 'speaks of its making'),
  ],
)
def test_planted_mistakes_are_found(tmp_path, plant, expected):
  found = planted(tmp_path, lambda root: _append(root / 'README.md', plant))
  assert any(expected in p for p in found), '\n'.join(found)


def test_the_unplanted_copy_is_clean(tmp_path):
  assert planted(tmp_path, lambda root: None) == []
