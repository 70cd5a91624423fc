"""What the benches measure and how they write it: timings, XLA's figures, Markdown.

Shared by bench/throughput.py and bench/device_check.py; imports only JAX and
NumPy (PyTorch only when asked to describe it).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional, Sequence

# Dense peak TFLOP/s by the math of the float32 or bfloat16 convolutions:
# 'bfloat16', 'tf32' (float32 on tensor cores) or 'float32' (full float32),
# matched against the device kind in this order. TPU float32 is n/a (its speed
# depends on the number of bfloat16 passes).
PEAK_TFLOPS = (
  ('H100 PCIe', {'bfloat16': 756.0, 'tf32': 378.0, 'float32': 51.0}),
  ('H100', {'bfloat16': 989.0, 'tf32': 494.7, 'float32': 67.0}),  # SXM
  ('H200', {'bfloat16': 989.0, 'tf32': 494.7, 'float32': 67.0}),
  ('A100', {'bfloat16': 312.0, 'tf32': 156.0, 'float32': 19.5}),
  ('TPU v4', {'bfloat16': 275.0}),
  ('TPU v5 lite', {'bfloat16': 197.0}),
  ('TPU v5e', {'bfloat16': 197.0}),
)


def peak_tflops(
  device_kind: str, math: str, override: Optional[dict] = None
) -> Optional[float]:
  """The device's dense peak for `math` (see PEAK_TFLOPS), or None if unknown."""
  if override and math in override:
    return override[math]
  for name, peaks in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peaks.get(math)
  return None


def parse_peaks(text: Optional[str]) -> dict[str, float]:
  """'67' (every math) or 'float32:67,tf32:494.7,bfloat16:989'."""
  if not text:
    return {}
  if ':' not in text:
    return dict.fromkeys(('float32', 'tf32', 'bfloat16'), float(text))
  return {k: float(v) for k, v in (item.split(':') for item in text.split(','))}


@dataclasses.dataclass
class Timing:
  """Seconds of the first call and of each timed call after the warm-up."""

  first_s: Optional[float] = None
  times: list = dataclasses.field(default_factory=list)
  cpu_times: list = dataclasses.field(default_factory=list)  # process CPU s

  @property
  def median_s(self) -> Optional[float]:
    return statistics.median(self.times) if self.times else None

  @property
  def cpu_s(self) -> Optional[float]:
    return statistics.median(self.cpu_times) if self.cpu_times else None

  def extend(self, other: Timing) -> None:
    self.first_s = self.first_s if self.first_s is not None else other.first_s
    self.times += other.times
    self.cpu_times += other.cpu_times


def time_calls(
  call: Callable[[], Any],
  warmup: int,
  steps: int,
  budget_s: Optional[float] = None,
) -> Timing:
  """Times `steps` calls (each must end synchronised) after `warmup` calls.

  With `budget_s`, stops timing once that many seconds have passed (at least
  one timed call).
  """
  t = Timing()
  start = time.perf_counter()
  call()
  t.first_s = time.perf_counter() - start
  for _ in range(max(warmup - 1, 0)):
    call()
  for _ in range(steps):
    begin, cpu = time.perf_counter(), time.process_time()
    call()
    t.times.append(time.perf_counter() - begin)
    t.cpu_times.append(time.process_time() - cpu)
    if budget_s is not None and time.perf_counter() - start > budget_s:
      break
  return t


def flops_of(compiled: Any) -> Optional[float]:
  """The 'flops' of XLA's cost analysis (a dict, or a list of one dict), or None."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def xla_memory_of(compiled: Any) -> Optional[int]:
  """Bytes XLA plans for the executable: arguments + outputs + temporaries - aliased."""
  try:
    m = compiled.memory_analysis()
    return int(
      m.argument_size_in_bytes
      + m.output_size_in_bytes
      + m.temp_size_in_bytes
      - m.alias_size_in_bytes
    )
  except Exception:  # pylint: disable=broad-except
    return None


def device_memory() -> tuple[Optional[int], Optional[int]]:
  """(peak_bytes_in_use, bytes_limit) of JAX's first device (None where not reported)."""
  import jax  # pylint: disable=g-import-not-at-top

  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  return stats.get('peak_bytes_in_use'), stats.get('bytes_limit')


def fmt(value: Optional[float], spec: str = '.2f', unit: str = '') -> str:
  return 'n/a' if value is None else f'{value:{spec}}{unit}'


def gib(value: Optional[int]) -> str:
  if value is None:
    return 'n/a'
  if value >= 2**30:
    return f'{value / 2**30:.2f} GiB'
  return f'{value / 2**20:.1f} MiB'


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  """A Markdown table."""
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  return lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


def goal(value: Optional[float], target: float, higher: bool = True) -> str:
  """'met' / 'not met' / 'n/a' of `value` against a goal."""
  if value is None:
    return 'n/a'
  return (
    'met' if (value >= target if higher else value <= target) else 'not met'
  )


def machine_lines() -> list[str]:
  """Date, machine, JAX device and versions, as Markdown list items."""
  import jax  # pylint: disable=g-import-not-at-top

  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [
        l.split(':', 1)[1].strip() for l in f if l.startswith('model name')
      ]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  versions = [f'python {platform.python_version()}']
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'torch'):
    try:
      module = importlib.import_module(name)
      versions.append(f'{name} {getattr(module, "__version__", "?")}')
    except ImportError:
      pass
  now = datetime.datetime.now().astimezone()
  load = os.getloadavg()
  return [
    f'- date: {now.strftime("%Y-%m-%d %H:%M %Z")}',
    f'- machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} '
    f'{platform.machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}',
    f'- JAX device: {dev.platform} ({dev.device_kind}) x{jax.device_count()}',
    f'- versions: {", ".join(versions)}',
  ]
