"""bench/memory.py: the compiled train step's memory table, on a tiny config."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_memory_table_of_a_tiny_config():
  cmd = [
    sys.executable,
    os.path.join(ROOT, 'bench', 'memory.py'),
    '--config=configs/tiny.py',
    '--config.crop_size=16',
    '--batch_sizes=2',
    '--variants=bf16_remat',
    '--remat=1,2,3',
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    cmd,
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [
    line.strip('|').split('|')
    for line in proc.stdout.splitlines()
    if line.startswith('| bf16_remat ')
  ]
  assert len(rows) == 1, proc.stdout
  name, batch, crop, *mib = (cell.strip() for cell in rows[0])
  assert (name, batch, crop) == ('bf16_remat', '2', '16')
  arguments, outputs, temporaries, total, peak, residuals = (
    float(m.replace(',', '')) for m in mib
  )
  assert min(arguments, outputs, temporaries) > 0
  assert total >= temporaries and peak > 0 and residuals > 0
  bad = subprocess.run(
    cmd[:2] + ['--config=configs/tiny.py', '--variants=fp16'],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert bad.returncode != 0 and 'fp16' in bad.stderr
