r"""FCN training and inference throughput in JAX, optionally against the official PyTorch Net.

One run on one machine measures, for each image size, batch and dtype:
  * JAX training: the trainer's own step (`fcn_jax.train.train_step`, the
    three stage losses, Charbonnier + 0.05 x edge, summed with fixed trust as
    in the release, and an Adam update), jitted and buffer-donating, images/s;
  * JAX inference: jitted `model.apply`, final output, images/s;
  * FLOP/s achieved (FLOPs from XLA's cost analysis of the compiled step) and
    the share of the device's peak where known; memory (XLA's plan of the
    executable everywhere, the device's peak where it reports one);
  * with --torch_ref: the same for the authors' `Net` with the same weights
    (converted from the JAX parameters) on the same inputs and device, trained
    with the release's losses.py and Adam, and the ratio JAX / PyTorch.
Compilation and warm-up are excluded from the timings and reported apart; each
timing is the median of --steps calls, each ended by block_until_ready (JAX)
or torch.cuda.synchronize (PyTorch). With --torch_ref each framework runs in
fresh processes of its own, alternating over --rounds (calls pooled).

Precision: JAX runs FCN with the model's `precision` (--precision; default
None: XLA's default, full float32 on CPU, TF32 allowed for float32 convs on
NVIDIA Ampere and newer GPUs); PyTorch runs with TF32 off
(torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32 = False, unless
--torch_tf32) and cudnn.benchmark on. bfloat16: FCN(dtype='bfloat16') (float32
parameters, bfloat16 compute) against torch.autocast(dtype=torch.bfloat16);
by default only on GPU/TPU (on CPU it is emulated and slow; ask with --dtypes).

Imports no TensorFlow. The step and the config are the trainer's, so it needs
this project installed, and clu and ml_collections. On an image that has JAX
but not these, from the repository root: `pip install --no-deps -e .` (offline,
add --no-build-isolation: it then needs setuptools>=64 installed) and
`pip install clu ml-collections` (both pure Python).

  python bench/throughput.py                                   # defaults
  python bench/throughput.py --torch_ref=/path/to/FCN --sizes=256 --steps=10
  python bench/throughput.py --torch_ref=/path/to/FCN --sizes=128 --rounds=2  # CPU
  python bench/throughput.py --smoke --torch_ref=/path/to/FCN  # < 1 min, CPU
  python bench/throughput.py --markdown_out=bench.md           # for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np

from configs import default
from fcn_jax import models
from fcn_jax import train
from fcn_jax import train_state
from fcn_jax.cpu import compiler_options
from fcn_jax.models import FCN, init_params
from fcn_jax.models import presets

ROOT = pathlib.Path(__file__).resolve().parents[1]

MODELS = presets.PRESETS  # --config=NAME: configs/default.py with these widths
# FCN's fields in config.model that the benchmark keeps; dtype and precision
# are set per case.
_MODEL_FIELDS = (*presets.FULL, 'remat')

# Dense peak TFLOP/s by dtype, matched against the device kind in this order.
# TPU float32 is n/a: its speed depends on the matmul precision (passes).
PEAK_TFLOPS = (
  ('H100 PCIe', {'float32': 51.0, 'bfloat16': 756.0}),
  ('H100', {'float32': 67.0, 'bfloat16': 989.0}),  # SXM
  ('H200', {'float32': 67.0, 'bfloat16': 989.0}),
  ('A100', {'float32': 19.5, 'bfloat16': 312.0}),
  ('TPU v4', {'bfloat16': 275.0}),
  ('TPU v5 lite', {'bfloat16': 197.0}),
  ('TPU v5e', {'bfloat16': 197.0}),
)

# The key of the weights every case starts from.
PARAMS_SEED = 0

# One PyTorch thread: with two, a busy machine can slow its OpenMP barriers 100x.
SMOKE = dict(
  model='tiny',
  sizes='32,32x48',
  train_sizes='32',
  steps=2,
  warmup=1,
  train_batch='2',
  infer_batch='1',
  torch_threads=1,
)


# ----------------------------------------------------------------------------
# Small helpers.


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (
    ImportError,
    ValueError,
  ):  # ValueError: blocked via sys.modules[module] = None
    return False


def parse_size(text: str) -> tuple[int, int]:
  """'256' -> (256, 256); '720x1280' -> (720, 1280) (height x width)."""
  parts = text.lower().split('x')
  if len(parts) == 1:
    parts = parts * 2
  h, w = (int(p) for p in parts)
  if h <= 0 or w <= 0 or h % 8 or w % 8:
    raise ValueError(
      f'size {text!r}: height and width must be positive multiples of 8'
    )
  return h, w


def parse_ints(text: str) -> list[int]:
  return [int(t) for t in text.split(',') if t.strip()]


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


def peak_tflops(
  device_kind: str, dtype: str, override: dict[str, float]
) -> Optional[float]:
  if dtype in override:
    return override[dtype]
  for name, peaks in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def parse_peaks(text: Optional[str]) -> dict[str, float]:
  """'67' (every dtype) or 'float32:67,bfloat16:989'."""
  if not text:
    return {}
  if ':' not in text:
    return {'float32': float(text), 'bfloat16': float(text)}
  return {k: float(v) for k, v in (item.split(':') for item in text.split(','))}


def bench_config(spec: str) -> tuple[str, ml_collections.ConfigDict]:
  """(name, trainer config) of a preset name or a configs/*.py path.

  A preset is configs/default.py with the preset's widths. Either way every
  stage is weighted 1 (trust='fixed'): the release's loss, which PyTorch runs.
  """
  if spec in MODELS:
    config = default.get_config()
    config.model.update(MODELS[spec])
    name = spec
  else:
    path = pathlib.Path(spec)
    if not path.is_file():
      raise ValueError(
        f'--config={spec}: not one of {sorted(MODELS)} nor a file'
      )
    config = _load_module(f'_bench_config_{path.stem}', path).get_config()
    name = path.stem
  config.loss.trust = 'fixed'
  return name, config


def model_fields(config: ml_collections.ConfigDict) -> dict:
  """The FCN fields of `config` that every case shares."""
  return {
    k: tuple(config.model[k]) if k == 'remat' else config.model[k]
    for k in _MODEL_FIELDS
  }


def _fmt(value: Optional[float], spec: str = '.2f', unit: str = '') -> str:
  return 'n/a' if value is None else f'{value:{spec}}{unit}'


def _bytes(value: Optional[int]) -> str:
  if value is None:
    return 'n/a'
  return (
    f'{value / 2**30:.2f} GiB' if value >= 2**30 else f'{value / 2**20:.1f} MiB'
  )


def _is_oom(e: BaseException) -> bool:
  text = str(e).lower()
  return 'resource_exhausted' in text or 'out of memory' in text


# ----------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class Case:
  mode: str  # 'train' or 'infer'
  height: int
  width: int
  batch: int
  dtype: str

  @property
  def size(self) -> str:
    return f'{self.height}x{self.width}'

  @property
  def key(self) -> tuple:
    return (self.mode, self.size, self.batch, self.dtype)


@dataclasses.dataclass
class Result:
  framework: str  # 'jax' or 'torch'
  case: Case
  compile_s: Optional[float] = None  # JAX: lower + compile
  warmup_s: Optional[float] = None  # the first call
  times: list = dataclasses.field(default_factory=list)
  cpu_times: list = dataclasses.field(
    default_factory=list
  )  # process CPU s, all threads
  flops: Optional[float] = None  # per call (XLA's count; PyTorch reuses it)
  xla_bytes: Optional[int] = None
  peak_bytes: Optional[int] = None
  error: Optional[str] = None

  @property
  def median_s(self) -> Optional[float]:
    return statistics.median(self.times) if self.times else None

  @property
  def cpu_s(self) -> Optional[float]:
    return statistics.median(self.cpu_times) if self.cpu_times else None

  @property
  def images_per_s(self) -> Optional[float]:
    return self.case.batch / self.median_s if self.times else None

  @property
  def tflops(self) -> Optional[float]:
    return (
      self.flops / self.median_s / 1e12 if self.flops and self.times else None
    )


def _timed_calls(
  result: Result, call: Callable[[], None], warmup: int, steps: int
) -> None:
  """Sets the first call's, and each of `steps` timed calls', seconds on `result`."""
  start = time.perf_counter()
  call()
  result.warmup_s = time.perf_counter() - start
  for _ in range(max(warmup - 1, 0)):
    call()
  for _ in range(steps):
    start, cpu = time.perf_counter(), time.process_time()
    call()
    result.times.append(time.perf_counter() - start)
    result.cpu_times.append(time.process_time() - cpu)


def _inputs(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A (blurry, sharp) pair of NHWC float32 batches in [0, 1]."""
  rng = np.random.default_rng(seed)
  shape = (case.batch, case.height, case.width, 3)
  return rng.random(shape, np.float32), rng.random(shape, np.float32)


# ----------------------------------------------------------------------------
# JAX.


def _device_peak_bytes() -> Optional[int]:
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return (
    int(stats['peak_bytes_in_use'])
    if stats and 'peak_bytes_in_use' in stats
    else None
  )


def run_jax(
  case: Case,
  config: ml_collections.ConfigDict,
  params: Any,
  precision: Optional[str],
  warmup: int,
  steps: int,
) -> tuple[Result, Optional[np.ndarray]]:
  """Times one case in JAX; returns the result and (inference) the final output.

  `params` were drawn by `init_params` with PARAMS_SEED; the training state is
  drawn the same way, so both start from the same weights.
  """
  result = Result('jax', case)
  model = models.model_from_config(
    config, dtype=case.dtype, precision=precision
  )
  blur, sharp = _inputs(case)
  output = None
  try:
    if case.mode == 'infer':
      fn = jax.jit(
        lambda p, x: model.apply({'params': p}, x)[0],
        compiler_options=compiler_options(),
      )
      x = jax.device_put(blur)
      start = time.perf_counter()
      compiled = fn.lower(params, x).compile()
      result.compile_s = time.perf_counter() - start
      out = [None]

      def call():
        out[0] = jax.block_until_ready(compiled(params, x))

      _timed_calls(result, call, warmup, steps)
      output = np.asarray(out[0])
    else:
      tx = train.create_optimizer(config)
      state = jax.jit(
        lambda r: train_state.create_train_state(r, model, tx, config)
      )(jax.random.key(PARAMS_SEED))
      batch = {'blur': jax.device_put(blur), 'sharp': jax.device_put(sharp)}
      step = functools.partial(
        train.train_step,
        model=model,
        tx=tx,
        config=config,
        learning_rate_fn=train.create_learning_rate_fn(config),
      )
      fn = jax.jit(
        step, donate_argnums=(0,), compiler_options=compiler_options()
      )
      start = time.perf_counter()
      compiled = fn.lower(state, batch).compile()
      result.compile_s = time.perf_counter() - start
      holder = [state]

      def call():
        holder[0], metrics = compiled(holder[0], batch)
        jax.block_until_ready((holder[0], metrics))

      _timed_calls(result, call, warmup, steps)
      del holder
    result.flops = flops_of(compiled)
    result.xla_bytes = xla_memory_of(compiled)
    result.peak_bytes = _device_peak_bytes()
  except Exception as e:  # pylint: disable=broad-except
    if not _is_oom(e):
      raise
    result.error = 'OOM'
  return result, output


# ----------------------------------------------------------------------------
# PyTorch (the authors' release).


def _load_module(name: str, path: pathlib.Path) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_official(ref: str) -> tuple[type, types.ModuleType]:
  """The release's `Net` class and its losses module, imported from the checkout."""
  if (
    'matplotlib.pyplot' not in sys.modules
  ):  # Net.py imports pyplot, never uses it
    try:
      import matplotlib.pyplot  # noqa: F401  pylint: disable=g-import-not-at-top
    except ImportError:
      mpl = types.ModuleType('matplotlib')
      mpl.pyplot = types.ModuleType('matplotlib.pyplot')
      sys.modules.update({'matplotlib': mpl, 'matplotlib.pyplot': mpl.pyplot})
  root = pathlib.Path(ref)
  net = _load_module('fcn_official_net', root / 'Net.py')
  official_losses = _load_module('fcn_official_losses', root / 'losses.py')
  return net.Net, official_losses


class TorchRunner:
  """The official Net, with the JAX parameters, on one torch device."""

  def __init__(
    self,
    ref: str,
    config: ml_collections.ConfigDict,
    params: Any,
    device: str,
    tf32: bool,
  ):
    import torch  # pylint: disable=g-import-not-at-top
    from fcn_jax import convert  # pylint: disable=g-import-not-at-top
    import torch_weights  # pylint: disable=g-import-not-at-top  (bench/)

    self.torch = torch
    self.device = torch.device(device)
    if self.device.type == 'cuda':
      torch.backends.cudnn.benchmark = True
      torch.backends.cuda.matmul.allow_tf32 = tf32
      torch.backends.cudnn.allow_tf32 = tf32
    net_cls, self.losses = load_official(ref)
    self.fields = {
      k: v for k, v in model_fields(config).items() if k != 'remat'
    }
    self.optimizer, self.edge_weight = config.optimizer, config.loss.edge_weight
    self.state_dict = {
      k: torch.from_numpy(np.ascontiguousarray(v))
      for k, v in torch_weights.flax_to_torch(
        jax.device_get(params), self.fields['num_cab']
      ).items()
    }
    self.net_cls = net_cls
    self.unused_prefix = convert.UNUSED_PREFIX

  def make_net(self):
    """A fresh Net with the converted weights (its stage1_decoder1 is never called)."""
    torch = self.torch
    net = self.net_cls(**self.fields)
    n = self.fields['n_feat']
    if n != 96:  # the release hard-codes attention_down/up as 96 -> 48 -> 96
      net.attention_down = torch.nn.Conv2d(n, n // 2, 1, bias=False)
      net.attention_up = torch.nn.Conv2d(n // 2, n, 1, bias=False)
    missing, unexpected = net.load_state_dict(self.state_dict, strict=False)
    bad = [k for k in missing if not k.startswith(self.unused_prefix)]
    if unexpected or bad:
      raise RuntimeError(
        f'weight conversion: unexpected {unexpected[:3]}, missing {bad[:3]}'
      )
    return net.to(self.device)

  def sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize(self.device)

  def autocast(self, dtype: str):
    if dtype == 'float32':
      return contextlib.nullcontext()
    return self.torch.autocast(
      self.device.type, dtype=getattr(self.torch, dtype)
    )

  def run(
    self, case: Case, warmup: int, steps: int
  ) -> tuple[Result, Optional[np.ndarray]]:
    torch = self.torch
    result = Result('torch', case)
    blur, sharp = _inputs(case)
    x = torch.from_numpy(blur.transpose(0, 3, 1, 2).copy()).to(self.device)
    y = torch.from_numpy(sharp.transpose(0, 3, 1, 2).copy()).to(self.device)
    output = None
    if self.device.type == 'cuda':
      torch.cuda.empty_cache()
      torch.cuda.reset_peak_memory_stats(self.device)
    try:
      net = self.make_net()
      if case.mode == 'infer':
        net.eval()
        outs = []

        def call():
          with torch.no_grad(), self.autocast(case.dtype):
            outs[:] = [net(x)[0]]
          self.sync()

        _timed_calls(result, call, warmup, steps)
        output = outs[0].float().cpu().numpy().transpose(0, 2, 3, 1)
      else:
        net.train()
        opt = self.optimizer
        optimizer = torch.optim.Adam(
          net.parameters(),
          lr=opt.learning_rate,
          betas=(opt.b1, opt.b2),
          eps=opt.eps,
        )
        char = self.losses.CharbonnierLoss()
        edge = self.losses.EdgeLoss()
        edge.kernel = edge.kernel.to(
          self.device
        )  # it picks CUDA whenever available

        def call():
          optimizer.zero_grad(set_to_none=True)
          with self.autocast(case.dtype):
            restored = net(x)
            loss_char = sum(char(r, y) for r in restored)
            loss_edge = sum(edge(r, y) for r in restored)
            loss = loss_char + self.edge_weight * loss_edge
          loss.backward()
          optimizer.step()
          self.sync()

        _timed_calls(result, call, warmup, steps)
      if self.device.type == 'cuda':
        result.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
    except torch.cuda.OutOfMemoryError:
      result.error = 'OOM'
    except RuntimeError as e:
      if not _is_oom(e):
        raise
      result.error = 'OOM'
    finally:
      if self.device.type == 'cuda':
        torch.cuda.empty_cache()
    return result, output


# ----------------------------------------------------------------------------
# Reporting.


def machine_lines(torch_device: Optional[str]) -> list[str]:
  """Machine, versions and date, as Markdown list items."""
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
  versions = [f'python {platform.python_version()}', f'jax {jax.__version__}']
  for name in ('jaxlib', 'flax', 'optax', 'torch'):
    try:
      versions.append(f'{name} {importlib.import_module(name).__version__}')
    except ImportError:
      pass
  lines = [
    f'- date: {datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}',
    f'- machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} '
    f'{platform.machine()}',
    f'- JAX device: {dev.platform} ({dev.device_kind}) x{jax.device_count()}',
    f'- versions: {", ".join(versions)}',
  ]
  if torch_device is not None:
    import torch  # pylint: disable=g-import-not-at-top

    desc = torch_device
    if torch_device.startswith('cuda'):
      desc += (
        f' ({torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, '
        f'cuDNN {torch.backends.cudnn.version()})'
      )
    lines.append(
      f'- PyTorch device: {desc}, {torch.get_num_threads()} intra-op threads'
    )
  return lines


def result_table(
  results: Sequence[Result], peaks: Callable[[str], Optional[float]]
) -> list[str]:
  head = (
    '| framework | mode | size | batch | dtype | compile s | first call s | '
    'median ms | CPU s/call | images/s | TFLOP/s | % of peak | XLA memory | peak memory |'
  )
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for r in results:
    c = r.case
    peak = peaks(c.dtype)
    share = f'{100 * r.tflops / peak:.1f}%' if r.tflops and peak else 'n/a'
    if r.error:
      cells = [r.error] + ['n/a'] * 9
    else:
      cells = [
        _fmt(r.compile_s) if r.framework == 'jax' else '-',
        _fmt(r.warmup_s),
        _fmt(1e3 * r.median_s, '.1f'),
        _fmt(r.cpu_s),
        _fmt(r.images_per_s, '.3f'),
        _fmt(r.tflops, '.3f'),
        share,
        _bytes(r.xla_bytes),
        _bytes(r.peak_bytes),
      ]
    lines.append(
      f'| {r.framework} | {c.mode} | {c.size} | {c.batch} | {c.dtype} | '
      + ' | '.join(cells)
      + ' |'
    )
  return lines


def ratio_table(results: Sequence[Result]) -> list[str]:
  by_key = {(r.framework, r.case.key): r for r in results}
  lines = [
    '| mode | size | batch | dtype | JAX images/s | PyTorch images/s | JAX / PyTorch |',
    '|---|---|---|---|---|---|---|',
  ]
  for r in results:
    if r.framework != 'jax' or ('torch', r.case.key) not in by_key:
      continue
    t = by_key[('torch', r.case.key)]
    ratio = (
      f'{r.images_per_s / t.images_per_s:.2f}x'
      if r.images_per_s and t.images_per_s
      else 'n/a'
    )
    c = r.case
    lines.append(
      f'| {c.mode} | {c.size} | {c.batch} | {c.dtype} | '
      f'{_fmt(r.images_per_s, ".3f") if not r.error else r.error} | '
      f'{_fmt(t.images_per_s, ".3f") if not t.error else t.error} | {ratio} |'
    )
  return lines


def run_other_benchmark(
  script: str, args: Sequence[str], needs: Sequence[str]
) -> list[str]:
  """Runs bench/<script> as a subprocess; returns a Markdown section of its output."""
  missing = [m for m in needs if not _installed(m)]
  title = f'#### bench/{script} {" ".join(args)}'.rstrip()
  if missing:
    return [title, '', f'skipped: {", ".join(missing)} not installed', '']
  cmd = [sys.executable, str(ROOT / 'bench' / script), *args]
  print('running', ' '.join(cmd), flush=True)
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  out = proc.stdout.strip() + (
    f'\n(exit status {proc.returncode})\n{proc.stderr[-2000:]}'
    if proc.returncode
    else ''
  )
  return [title, '', '```', out, '```', '']


# ----------------------------------------------------------------------------


def run_cases(
  framework: str,
  cases: Sequence[Case],
  args: argparse.Namespace,
  config: ml_collections.ConfigDict,
  params: Any,
  torch_device: Optional[str],
  warmup: int,
  steps: int,
) -> tuple[list[Result], dict[tuple, np.ndarray]]:
  """Times `cases` in one framework, in this process; returns results and outputs."""
  results, outputs = [], {}
  runner = (
    TorchRunner(args.torch_ref, config, params, torch_device, args.torch_tf32)
    if framework == 'torch'
    else None
  )
  for case in cases:
    if runner is not None:
      r, out = runner.run(case, warmup, steps)
      note = ''
    else:
      r, out = run_jax(case, config, params, args.precision, warmup, steps)
      note = f' (compile {_fmt(r.compile_s, ".1f")} s)'
    results.append(r)
    if out is not None:
      outputs[(framework, case.key)] = out
    print(
      f'{framework:5s} {case.mode} {case.size} b{case.batch} {case.dtype}: '
      f'{r.error or _fmt(r.images_per_s, ".3f") + " images/s"}{note}',
      flush=True,
    )
  return results, outputs


def save_results(
  path: str, results: Sequence[Result], outputs: dict[tuple, np.ndarray]
) -> None:
  with open(path, 'w') as f:
    json.dump([dataclasses.asdict(r) for r in results], f)
  np.savez(
    path + '.npz', **{'|'.join(map(str, k[1])): v for k, v in outputs.items()}
  )


def load_results(
  path: str, framework: str
) -> tuple[list[Result], dict[tuple, np.ndarray]]:
  with open(path) as f:
    results = [Result(**{**d, 'case': Case(**d['case'])}) for d in json.load(f)]
  outputs = {}
  with np.load(path + '.npz') as z:
    for name in z.files:
      mode, size, batch, dtype = name.split('|')
      outputs[(framework, (mode, size, int(batch), dtype))] = z[name]
  return results, outputs


def run_isolated(
  argv: Sequence[str], rounds: int, cases: Sequence[Case]
) -> tuple[list[Result], dict[tuple, np.ndarray]]:
  """Runs each framework's cases in fresh processes, alternating, `rounds` times.

  Neither framework then shares a heap, thread pools or device memory with the
  other, and both see the machine's slow drifts alike. Timed calls are pooled;
  compile and first-call times are those of the first round.
  """
  argv = [a for a in argv if not a.startswith(('--markdown_out', '--also_'))]
  merged: dict[tuple, Result] = {}
  outputs: dict[tuple, np.ndarray] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(rounds):
      for framework in ('torch', 'jax') if i % 2 == 0 else ('jax', 'torch'):
        out = os.path.join(tmp, f'{framework}{i}.json')
        subprocess.run(
          [
            sys.executable,
            __file__,
            *argv,
            f'--only={framework}',
            f'--results_out={out}',
          ],
          check=True,
        )
        results, outs = load_results(out, framework)
        outputs.update(outs)
        for r in results:
          key = (framework, r.case.key)
          if key not in merged:
            merged[key] = r
          else:
            merged[key].times += r.times
            merged[key].cpu_times += r.cpu_times
            merged[key].error = merged[key].error or r.error
  order = {('torch', c.key): i for i, c in enumerate(cases)}
  order.update({('jax', c.key): len(cases) + i for i, c in enumerate(cases)})
  return sorted(
    merged.values(), key=lambda r: order[(r.framework, r.case.key)]
  ), outputs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    '--config',
    default=None,
    help=f'Model widths: one of {sorted(MODELS)} or configs/*.py '
    '(default: full; --smoke: tiny).',
  )
  p.add_argument(
    '--sizes',
    default=None,
    help='Comma-separated HxW or S (default: 256,720x1280).',
  )
  p.add_argument(
    '--train_sizes',
    default=None,
    help='Sizes to train at (default: --sizes; on CPU only those up to '
    '256x256: a 720x1280 full-width step takes ~20 min on one core).',
  )
  p.add_argument(
    '--batch',
    default=None,
    help='Training and inference batch sizes (comma-separated); '
    'sets both --train_batch and --infer_batch.',
  )
  p.add_argument(
    '--train_batch',
    default=None,
    help='Default: 16 on GPU/TPU for sizes up to 256x256 and 1 above; 1 on CPU.',
  )
  p.add_argument('--infer_batch', default=None, help='Default: 1.')
  p.add_argument(
    '--dtypes',
    default=None,
    help='float32,bfloat16 (default: both on GPU/TPU, float32 on CPU).',
  )
  p.add_argument('--modes', default='infer,train')
  p.add_argument(
    '--steps',
    type=int,
    default=None,
    help='Timed calls per case; the median is reported (default 10 on '
    'GPU/TPU, 5 on CPU).',
  )
  p.add_argument(
    '--warmup',
    type=int,
    default=None,
    help='Untimed calls before timing, the first reported (default 2).',
  )
  p.add_argument(
    '--precision',
    default=None,
    choices=('high', 'highest'),
    help="FCN's convolution precision (default: XLA's default).",
  )
  p.add_argument(
    '--peak_tflops',
    default=None,
    help="Device peak, '67' or 'float32:67,bfloat16:989' (default: "
    'a table of known devices).',
  )
  p.add_argument(
    '--torch_ref',
    default=os.environ.get('FCN_OFFICIAL_REPO'),
    help='Checkout of the official FCN (Net.py, losses.py) to compare '
    'with (default: $FCN_OFFICIAL_REPO).',
  )
  p.add_argument('--no_torch', action='store_true', help='Ignore --torch_ref.')
  p.add_argument(
    '--torch_device', default=None, help='Default: cuda if available, else cpu.'
  )
  p.add_argument(
    '--torch_tf32', action='store_true', help='Allow TF32 in PyTorch.'
  )
  p.add_argument(
    '--torch_threads',
    type=int,
    default=None,
    help="PyTorch intra-op threads (default: PyTorch's own choice).",
  )
  p.add_argument(
    '--rounds',
    type=int,
    default=1,
    help='With --torch_ref: each framework runs its cases in a fresh '
    'process, alternating torch, jax, jax, torch, ... for this many '
    'rounds; the timed calls of all rounds are pooled (default 1).',
  )
  p.add_argument(
    '--only', choices=('jax', 'torch'), default=None, help=argparse.SUPPRESS
  )  # a worker of --rounds
  p.add_argument('--results_out', default=None, help=argparse.SUPPRESS)
  p.add_argument(
    '--also_metrics', action='store_true', help='Also run bench/metrics.py.'
  )
  p.add_argument(
    '--also_input_pipeline',
    action='store_true',
    help='Also run bench/input_pipeline.py (needs TensorFlow).',
  )
  p.add_argument(
    '--markdown_out', default=None, help='Write the Markdown block here.'
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help=f'Tiny model and sizes, few steps: {SMOKE}.',
  )
  args = p.parse_args(argv)
  if args.rounds < 1:
    p.error(f'--rounds={args.rounds}: must be at least 1')
  if args.smoke:
    for k, v in SMOKE.items():
      if k == 'model':
        args.config = args.config or v
      elif getattr(args, k, None) is None:
        setattr(args, k, v)
  if args.batch:
    args.train_batch = args.train_batch or args.batch
    args.infer_batch = args.infer_batch or args.batch
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  use_torch = bool(args.torch_ref) and not args.no_torch
  if use_torch:
    if not _installed('torch'):
      print('--torch_ref given but PyTorch is not installed: JAX only')
      use_torch = False
    elif not (pathlib.Path(args.torch_ref) / 'Net.py').is_file():
      sys.exit(f'error: --torch_ref={args.torch_ref}: no Net.py there')
  if args.only == 'jax':
    use_torch = False
  if use_torch:
    # Both frameworks share the accelerator: JAX allocates as it goes instead
    # of taking 75% up front, and PyTorch runs (and frees its cache) first.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  warnings.filterwarnings(
    'ignore', message='Some donated buffers were not usable'
  )

  accelerator = jax.default_backend() != 'cpu'
  dev = jax.devices()[0]
  name, config = bench_config(args.config or 'full')
  fields = model_fields(config)
  sizes = [parse_size(s) for s in (args.sizes or '256,720x1280').split(',')]
  dtypes = (
    args.dtypes or ('float32,bfloat16' if accelerator else 'float32')
  ).split(',')
  for d in dtypes:
    if d not in ('float32', 'bfloat16'):
      sys.exit(f'error: --dtypes: {d!r} is not float32 or bfloat16')
  modes = args.modes.split(',')
  steps = args.steps or (10 if accelerator else 5)
  warmup = args.warmup if args.warmup is not None else 2
  infer_batches = parse_ints(args.infer_batch or '1')
  peaks_override = parse_peaks(args.peak_tflops)
  peaks = functools.partial(
    peak_tflops, dev.device_kind, override=peaks_override
  )

  def train_batches(h, w):
    if args.train_batch:
      return parse_ints(args.train_batch)
    return [16 if accelerator and h * w <= 256 * 256 else 1]

  if args.train_sizes:
    train_sizes = [parse_size(s) for s in args.train_sizes.split(',')]
  else:
    train_sizes = [
      (h, w) for h, w in sizes if accelerator or h * w <= 256 * 256
    ]
  cases = []
  for h, w in dict.fromkeys(sizes + train_sizes):
    for dtype in dtypes:
      for mode in modes:
        if mode == 'infer' and (h, w) in sizes:
          cases += [Case(mode, h, w, b, dtype) for b in infer_batches]
        elif mode == 'train' and (h, w) in train_sizes:
          cases += [Case(mode, h, w, b, dtype) for b in train_batches(h, w)]
        elif mode not in ('infer', 'train'):
          sys.exit(f'error: --modes: {mode!r} is not infer or train')

  torch_device = None
  if use_torch:
    import torch  # pylint: disable=g-import-not-at-top

    torch_device = args.torch_device or (
      'cuda' if torch.cuda.is_available() else 'cpu'
    )
    if args.torch_threads:
      torch.set_num_threads(args.torch_threads)
  load_start = os.getloadavg()
  header = machine_lines(torch_device)
  if not args.only:
    print('\n'.join(header))
  print(
    f'model {name}: {fields}; {len(cases)} cases; {steps} timed steps after '
    f'{warmup} warm-up; load average {load_start[0]:.2f} {load_start[1]:.2f} '
    f'{load_start[2]:.2f}',
    flush=True,
  )

  init = functools.partial(init_params, FCN(**fields))  # as create_train_state
  n_params = sum(
    p.size for p in jax.tree.leaves(jax.eval_shape(init, jax.random.key(0)))
  )
  print(f'{n_params / 1e6:.3f} M parameters', flush=True)

  if use_torch and not args.only:
    # Each framework in fresh processes (the workers below), not in this one.
    results, outputs = run_isolated(
      argv if argv is not None else sys.argv[1:], args.rounds, cases
    )
  else:
    framework = args.only or 'jax'
    params = jax.block_until_ready(jax.jit(init)(jax.random.key(PARAMS_SEED)))
    results, outputs = run_cases(
      framework, cases, args, config, params, torch_device, warmup, steps
    )
    if args.only:  # a worker of run_isolated: results to --results_out
      save_results(args.results_out, results, outputs)
      return 0
  parity = []
  for case in cases:
    jax_out, torch_out = (
      outputs.get(('jax', case.key)),
      outputs.get(('torch', case.key)),
    )
    if (
      jax_out is not None
      and torch_out is not None
      and case.dtype == 'float32'
      and case.batch == 1
    ):
      diff = float(np.max(np.abs(jax_out - torch_out)))
      parity.append(
        f'- max |JAX - PyTorch| of the final output, {case.size}: {diff:.2e}'
      )
  for r in results:  # PyTorch computes the same function: same FLOPs
    if r.framework == 'torch':
      r.flops = next(
        (
          j.flops
          for j in results
          if j.framework == 'jax' and j.case.key == r.case.key
        ),
        None,
      )
  load_end = os.getloadavg()

  cmd = ' '.join(
    [
      'python bench/throughput.py',
      *(argv if argv is not None else sys.argv[1:]),
    ]
  )
  jax_precision = args.precision or "XLA default"
  block = [
    f'### FCN throughput: {dev.device_kind}, model {name}',
    '',
    *header,
    f'- load average (1/5/15 min): start {load_start[0]:.2f}/{load_start[1]:.2f}/'
    f'{load_start[2]:.2f}, end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}',
    f'- model: {fields} ({n_params / 1e6:.2f} M parameters)',
    f'- timing: median of {steps * (args.rounds if use_torch else 1)} calls'
    + (
      f' ({steps} in each of {args.rounds} rounds; each round runs each framework '
      'in a fresh process, torch, jax, jax, torch, ...)'
      if use_torch
      else ''
    )
    + f' after {warmup} warm-up calls (the first reported as "first call"); JAX '
    'compile time apart; CPU s/call: process CPU time (all threads) per call, median',
    f'- precision: JAX FCN(precision={args.precision}) ({jax_precision}); '
    + (
      f'PyTorch TF32 {"on" if args.torch_tf32 else "off"}, cudnn.benchmark on '
      '(CUDA); bfloat16 = torch.autocast'
      if use_torch
      else 'no PyTorch run'
    ),
    *(
      [
        '- note: on NVIDIA Ampere and newer GPUs XLA\'s default precision may run '
        'float32 convolutions in TF32 (PyTorch here: TF32 off); for like-for-like '
        'float32 pass --precision=highest or --torch_tf32. The float32 peak is the '
        'non-tensor-core rate, so TF32 can exceed 100%'
      ]
      if dev.platform == 'gpu'
      else []
    ),
    '- training: fcn_jax.train.train_step: 3 stage losses (Charbonnier + '
    f'{config.loss.edge_weight} x edge), fixed trust, Adam '
    f'{config.optimizer.learning_rate}; PyTorch: the release\'s losses.py and '
    'torch.optim.Adam',
    '- FLOPs: XLA cost analysis of the compiled JAX call (2 per multiply-add); '
    'PyTorch TFLOP/s uses the same count. XLA memory: the executable\'s plan '
    '(arguments + outputs + temporaries); peak memory: device peak (JAX: of the '
    'process so far; PyTorch: of the case)',
    f'- command: `{cmd}`',
    *parity,
    '',
    *result_table(results, peaks),
    '',
  ]
  if use_torch:
    block += ['JAX / PyTorch:', '', *ratio_table(results), '']
  if args.also_metrics:
    block += run_other_benchmark(
      'metrics.py',
      ['--batch', '1', '--height', '64', '--width', '64'] if args.smoke else [],
      ('skimage', 'scipy', 'clu'),
    )
  if args.also_input_pipeline:
    block += run_other_benchmark(
      'input_pipeline.py',
      [
        '--seconds',
        '3',
        '--photos',
        '2',
        '--crops_per_photo',
        '1',
        '--batch_size',
        '2',
        '--crop',
        '64',
      ]
      if args.smoke
      else [],
      ('tensorflow', 'tensorflow_datasets', 'PIL'),
    )
  text = '\n'.join(block)
  print('\n' + text)
  if args.markdown_out:
    with open(args.markdown_out, 'a') as f:
      f.write(text + '\n')
    print(f'appended to {args.markdown_out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
