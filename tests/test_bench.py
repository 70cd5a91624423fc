"""bench/: throughput.py and device_check.py --smoke end to end, their light imports, helpers.

The smoke run compares with the official PyTorch Net when FCN_OFFICIAL_REPO
names a checkout of it (and PyTorch is installed).
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'bench', 'throughput.py')
REPO = os.environ.get('FCN_OFFICIAL_REPO')
WITH_TORCH = bool(
  REPO
  and os.path.isfile(os.path.join(REPO, 'Net.py'))
  and importlib.util.find_spec('torch') is not None
)


def load_throughput():
  spec = importlib.util.spec_from_file_location('bench_throughput', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def table_rows(text):
  """{(framework, mode, size): {column: cell}} of the results table."""
  lines = text.splitlines()
  head = next(i for i, l in enumerate(lines) if l.startswith('| framework |'))
  columns = [c.strip() for c in lines[head].strip('|').split('|')]
  rows = {}
  for line in lines[head + 2 :]:
    if not line.startswith('|'):
      break
    cells = dict(zip(columns, (c.strip() for c in line.strip('|').split('|'))))
    rows[(cells['framework'], cells['mode'], cells['size'])] = cells
  return rows


@pytest.mark.slow
def test_smoke_run(tmp_path):
  out_md = tmp_path / 'bench.md'
  cmd = [sys.executable, SCRIPT, '--smoke', f'--markdown_out={out_md}']
  cmd += [f"--torch_ref={REPO}"] if WITH_TORCH else ["--no_torch"]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    cmd,
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = table_rows(proc.stdout)
  expected = [
    ('jax', 'infer', '32x32'),
    ('jax', 'infer', '32x48'),
    ('jax', 'train', '32x32'),
  ]
  if WITH_TORCH:
    expected += [('torch',) + key[1:] for key in expected]
  assert sorted(rows) == sorted(expected), proc.stdout[-3000:]
  for key, cells in rows.items():
    assert float(cells['images/s']) > 0, (key, cells)
    assert cells['dtype'] == 'float32'
  for mode in ('infer', 'train'):
    assert (
      float(rows[('jax', mode, '32x32')]['TFLOP/s']) > 0
    )  # XLA's FLOP count
  markdown = out_md.read_text()
  assert (
    '| framework | mode | size |' in markdown and 'load average' in markdown
  )
  if WITH_TORCH:
    assert (
      '| infer | 32x32 | 1 | float32 |' in markdown.split('JAX / PyTorch:')[1]
    )
    # Same weights, same function: the converted Net agrees with FCN.
    diffs = [
      float(l.rsplit(':', 1)[1])
      for l in proc.stdout.splitlines()
      if l.startswith('- max |JAX - PyTorch|')
    ]
    assert diffs and max(diffs) < 1e-4, diffs


BLOCKER = """
import importlib.abc, sys
BLOCKED = {'clu', 'ml_collections', 'PIL', 'tensorflow', 'tensorflow_datasets'}
class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED:
      raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Blocker())
"""


def run_python(code, timeout=300):
  return subprocess.run(
    [sys.executable, '-c', textwrap.dedent(code)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
    env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT),
  )


@pytest.mark.parametrize(
  'module', ['throughput', 'device_check', 'reference', 'report']
)
def test_benches_import_without_clu_ml_collections_pil_tf(module):
  proc = run_python(
    BLOCKER
    + f'import bench.{module}\n'
    + 'from bench import reference\n'
    + 'from fcn_jax import models, train, inference, evaluators, train_state\n'
    + "models.model_from_config(reference.release_config(), dtype='bfloat16')\n"
    + "assert 'clu' not in sys.modules and 'PIL' not in sys.modules\n"
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_blocker_blocks():
  proc = run_python(BLOCKER + 'import ml_collections\n')
  assert proc.returncode != 0 and 'blocked: ml_collections' in proc.stderr


def test_release_config_is_the_trainers_defaults():
  from bench import reference
  from configs import default

  config = default.get_config().to_dict()
  release = reference.release_config().to_dict()
  for group in ('model', 'loss', 'optimizer'):
    expected = (
      dict(config[group], trust='fixed') if group == 'loss' else config[group]
    )
    assert release[group] == expected, group
  assert release['seed'] == config['seed']
  tiny = reference.release_config({'n_feat': 8}, remat=(1,))
  assert tiny.model.n_feat == 8 and tiny.model.remat == (1,)
  assert reference.RELEASE['model']['n_feat'] == 96  # not modified


@pytest.mark.parametrize(
  'name,preset', [('gopro_release', 'full'), ('demo', 'demo'), ('tiny', 'tiny')]
)
def test_configs_and_presets_give_the_trainers_model(name, preset):
  t = load_throughput()
  from_file, config = t.bench_config(
    os.path.join(ROOT, 'configs', f'{name}.py')
  )
  assert from_file == name and config.loss.trust == 'fixed'  # as the release
  assert {k: config.model[k] for k in t.MODELS[preset]} == t.MODELS[preset]
  from_preset, config = t.bench_config(preset)
  assert from_preset == preset and config.loss.trust == 'fixed'
  assert {k: config.model[k] for k in t.MODELS[preset]} == t.MODELS[preset]
  with pytest.raises(ValueError, match='not one of'):
    t.bench_config('no_such_preset')


def test_helpers():
  t = load_throughput()
  from bench import report

  assert t.parse_size('256') == (256, 256)
  assert t.parse_size('720x1280') == (720, 1280)
  with pytest.raises(ValueError):
    t.parse_size('30x32')
  dict_form = types.SimpleNamespace(cost_analysis=lambda: {'flops': 12.0})
  list_form = types.SimpleNamespace(cost_analysis=lambda: [{'flops': 7.0}])
  assert (
    report.flops_of(dict_form) == 12.0 and report.flops_of(list_form) == 7.0
  )
  assert (
    report.flops_of(types.SimpleNamespace(cost_analysis=lambda: None)) is None
  )
  assert report.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.0
  assert report.peak_tflops('NVIDIA H100 80GB HBM3', 'tf32') == 494.7
  assert report.peak_tflops('NVIDIA H100 PCIe', 'float32') == 51.0
  assert report.peak_tflops('cpu', 'float32') is None
  assert report.peak_tflops('cpu', 'tf32', report.parse_peaks('1.5')) == 1.5
  assert (
    report.goal(1.6, 1.5) == 'met' and report.goal(0.2, 0.1, False) == 'not met'
  )
  timing = report.time_calls(lambda: None, warmup=1, steps=3)
  assert len(timing.times) == 3 and timing.first_s is not None


def test_replaced_flags_name_their_replacement(capsys):
  t = load_throughput()
  with pytest.raises(SystemExit):
    t.parse_args(['--torch_tf32'])
  assert '--precision=tf32' in capsys.readouterr().err


def _double(x):
  return 2 * x


def _fail():
  raise KeyError('no such thing')


def _sleep():
  import time

  time.sleep(60)


def test_isolated_returns_raises_and_times_out():
  from bench import reference

  assert reference.isolated(_double, 21) == 42
  with pytest.raises(reference.IsolatedError, match='no such thing'):
    reference.isolated(_fail)
  with pytest.raises(reference.IsolatedError, match='no result after'):
    reference.isolated(_sleep, timeout=5)


@pytest.mark.slow
def test_device_check_smoke(tmp_path):
  out_md = tmp_path / 'check.md'
  cmd = [
    sys.executable,
    os.path.join(ROOT, 'bench', 'device_check.py'),
    '--smoke',
    f'--cache_dir={tmp_path / "cache"}',
    f'--markdown_out={out_md}',
  ]
  if not WITH_TORCH:
    cmd.append('--torch_ref=')
  proc = subprocess.run(
    cmd,
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
    capture_output=True,
    text=True,
    timeout=1500,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  block = out_md.read_text()
  assert block in proc.stdout and block.startswith('### FCN device check')
  lines = block.splitlines()
  for dtype in ('float32', 'bfloat16'):
    for remat in ('none', 'stages'):
      row = next(
        l for l in lines if l.startswith(f'| {dtype} | {dtype} | {remat} |')
      )
      cells = [c.strip() for c in row.strip('|').split('|')]
      assert cells[3] == '1' and float(cells[6]) > 0, row  # batch, images/s
  for variant in ('float32', 'bfloat16', 'tiled 16/8'):
    row = next(l for l in lines if l.startswith(f'| {variant} |'))
    assert float(row.strip('|').split('|')[3]) > 0, row  # latency s
  assert 'images/s, compile' in block and '| bf16 MFU >= 40% |' in block
  if WITH_TORCH:
    assert '| train | bfloat16 | autocast bf16, channels_last | 1 |' in block
