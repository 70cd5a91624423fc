"""bench/throughput.py: the --smoke run end to end, its imports and its helpers.

The smoke run compares with the official PyTorch Net when FCN_OFFICIAL_REPO
names a checkout of it (and PyTorch is installed).
"""

import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
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
  cmd += [f'--torch_ref={REPO}'] if WITH_TORCH else ['--no_torch']
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


def test_imports_need_no_tensorflow():
  code = (
    "import sys\n"
    "for m in ('tensorflow', 'tensorflow_datasets'):\n"
    "  sys.modules[m] = None\n"
    f"sys.path.insert(0, {ROOT!r})\n"
    "import bench.throughput as t\n"
    "from fcn_jax import convert\n"
    "_, config = t.bench_config('configs/gopro.py')\n"
    "assert {k: config.model[k] for k in t.MODELS['full']} == t.MODELS['full']\n"
  )
  proc = subprocess.run(
    [sys.executable, '-c', code],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(
  'name,preset', [('gopro_release', 'full'), ('demo', 'demo'), ('tiny', 'tiny')]
)
def test_configs_and_presets_give_the_trainers_config(name, preset):
  t = load_throughput()
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  from_file, config = t.bench_config(path)
  assert from_file == name and config.loss.trust == 'fixed'  # as the release
  fields = t.model_fields(config)
  assert fields.pop('remat') == ()
  assert fields == t.MODELS[preset]
  from_preset, config = t.bench_config(preset)
  assert from_preset == preset and config.loss.trust == 'fixed'
  assert t.model_fields(config) == dict(t.MODELS[preset], remat=())
  with pytest.raises(ValueError, match='not one of'):
    t.bench_config('no_such_preset')


def test_helpers():
  t = load_throughput()
  assert t.parse_size('256') == (256, 256)
  assert t.parse_size('720x1280') == (720, 1280)
  with pytest.raises(ValueError):
    t.parse_size('30x32')
  dict_form = types.SimpleNamespace(cost_analysis=lambda: {'flops': 12.0})
  list_form = types.SimpleNamespace(cost_analysis=lambda: [{'flops': 7.0}])
  assert t.flops_of(dict_form) == 12.0 and t.flops_of(list_form) == 7.0
  assert t.flops_of(types.SimpleNamespace(cost_analysis=lambda: None)) is None
  assert t.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16', {}) == 989.0
  assert t.peak_tflops('NVIDIA H100 PCIe', 'float32', {}) == 51.0
  assert t.peak_tflops('cpu', 'float32', {}) is None
  assert t.peak_tflops('cpu', 'float32', t.parse_peaks('1.5')) == 1.5
  assert t.parse_peaks('float32:67,bfloat16:989') == {
    'float32': 67.0,
    'bfloat16': 989.0,
  }


def test_worker_results_round_trip(tmp_path):
  t = load_throughput()
  case = t.Case('infer', 32, 48, 1, 'float32')
  r = t.Result(
    'torch', case, warmup_s=1.5, times=[0.5, 0.25], cpu_times=[1.0, 0.5]
  )
  out = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
  path = str(tmp_path / 'r.json')
  t.save_results(path, [r], {('torch', case.key): out})
  results, outputs = t.load_results(path, 'torch')
  assert results == [r] and results[0].images_per_s == 1 / 0.375
  np.testing.assert_array_equal(outputs[('torch', case.key)], out)
