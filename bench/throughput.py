r"""FCN training and inference throughput in JAX, optionally against the official PyTorch Net.

For each image size, batch and dtype: the trainer's own step
(`fcn_jax.train.train_step`: three stage losses, Charbonnier + 0.05 x edge,
fixed trust as in the release, Adam), jitted and buffer-donating, and jitted
inference (`model.apply`, final output), in images/s; FLOP/s from XLA's cost
analysis against the device's peak; memory (XLA's plan, the device's peak).
With --torch_ref the authors' `Net` (bench/reference.py) runs with the same
weights on the same inputs and device, and the tables give JAX / PyTorch.
Compilation and warm-up are reported apart; each timing is the median of
--steps synchronised calls. With --torch_ref each framework runs in fresh
processes of its own (`reference.isolated`), alternating over --rounds.

Precision, like for like (said in the table): --precision=tf32 (default)
lets float32 convolutions use TF32 on both sides (JAX: XLA's default
precision; PyTorch: allow_tf32 on for matmul and cuDNN); --precision=highest
turns it off on both (FCN(precision='highest'); allow_tf32 off). bfloat16 is
FCN(dtype='bfloat16') (float32 parameters) against torch.autocast(bfloat16)
with channels_last; by default only on GPU/TPU.

Imports JAX, Flax, Optax, Orbax and NumPy (+ PyTorch for the reference):
runs on an accelerator image without TensorFlow, clu or ml_collections.

  python bench/throughput.py                                   # defaults
  python bench/throughput.py --torch_ref=/path/to/FCN --sizes=256 --steps=10
  python bench/throughput.py --torch_ref=/path/to/FCN --sizes=128 --rounds=2  # CPU
  python bench/throughput.py --smoke --torch_ref=/path/to/FCN  # < 1 min, CPU
  python bench/throughput.py --markdown_out=bench.md           # for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import sys
import time
import warnings
from typing import Any, Optional, Sequence

import jax
import numpy as np

try:  # imported as bench.<name> (tests), or run as bench/<name>.py
  from bench import reference
  from bench import report
except ImportError:
  import reference  # pytype: disable=import-error
  import report  # pytype: disable=import-error

from fcn_jax import models
from fcn_jax import train
from fcn_jax import train_state
from fcn_jax.cpu import compiler_options
from fcn_jax.models import presets

MODELS = presets.PRESETS  # --config=NAME: the release's recipe at these widths
PARAMS_SEED = 0  # the key of the weights every case starts from
SMOKE = dict(
  config='tiny',
  sizes='32,32x48',
  train_sizes='32',
  steps=2,
  warmup=1,
  train_batch='2',
  infer_batch='1',
  torch_threads=1,  # with two, a busy machine can slow OpenMP barriers 100x
)
REPLACED = {
  '--torch_tf32': '--precision=tf32 (TF32 on both sides)',
  '--precision=high': '--precision=tf32',
  '--batch': '--train_batch and --infer_batch',
  '--also_metrics': 'python bench/metrics.py',
  '--also_input_pipeline': 'python bench/input_pipeline.py',
}


@dataclasses.dataclass(frozen=True)
class Case:
  mode: str  # 'train' or 'infer'
  height: int
  width: int
  batch: int
  dtype: str

  @property
  def size(self) -> str:
    return f'{self.height}x{self.width}'


@dataclasses.dataclass
class Result:
  framework: str  # 'jax' or 'torch'
  case: Case
  precision: str = ''
  timing: report.Timing = dataclasses.field(default_factory=report.Timing)
  compile_s: Optional[float] = None
  flops: Optional[float] = None  # per call, XLA's count (PyTorch reuses it)
  xla_bytes: Optional[int] = None
  peak_bytes: Optional[int] = None
  error: Optional[str] = None

  @property
  def images_per_s(self) -> Optional[float]:
    s = self.timing.median_s
    return self.case.batch / s if s else None

  @property
  def tflops(self) -> Optional[float]:
    s = self.timing.median_s
    return self.flops / s / 1e12 if self.flops and s else None


def parse_size(text: str) -> tuple[int, int]:
  """'256' -> (256, 256); '720x1280' -> (720, 1280) (height x width)."""
  parts = text.lower().split('x')
  h, w = (int(p) for p in (parts * 2 if len(parts) == 1 else parts))
  if h <= 0 or w <= 0 or h % 8 or w % 8:
    raise ValueError(
      f'size {text!r}: height and width must be positive multiples of 8'
    )
  return h, w


def parse_ints(text: str) -> list[int]:
  return [int(t) for t in text.split(',') if t.strip()]


def bench_config(spec: str) -> tuple[str, Any]:
  """(name, trainer config) of a preset name or a configs/*.py path, with fixed trust.

  A preset is `reference.release_config` at the preset's widths (no
  ml_collections); a file is loaded as the trainer loads it (needs it).
  """
  if spec in MODELS:
    return spec, reference.release_config(MODELS[spec])
  path = pathlib.Path(spec)
  if not path.is_file():
    raise ValueError(f'--config={spec}: not one of {sorted(MODELS)} nor a file')
  config = reference._load_module(f'_bench_{path.stem}', path).get_config()  # pylint: disable=protected-access
  config.loss.trust = 'fixed'  # the release's loss, which PyTorch runs
  return path.stem, config


def _inputs(case: Case) -> tuple[np.ndarray, np.ndarray]:
  """A (blurry, sharp) pair of NHWC float32 batches in [0, 1]."""
  rng = np.random.default_rng(0)
  shape = (case.batch, case.height, case.width, 3)
  return rng.random(shape, np.float32), rng.random(shape, np.float32)


def jax_precision(dtype: str, tf32: bool) -> str:
  if dtype == 'bfloat16':
    return 'bf16 compute, fp32 params'
  if jax.default_backend() == 'cpu':
    return 'fp32 (CPU)'
  if jax.default_backend() == 'gpu':
    return 'TF32 (XLA default)' if tf32 else 'fp32 (highest)'
  return 'XLA default' if tf32 else 'fp32 (highest)'


def _params(config: Any) -> Any:
  model = models.model_from_config(config)
  return jax.jit(functools.partial(models.init_params, model))(
    jax.random.key(PARAMS_SEED)
  )


def run_jax(
  case: Case, config: Any, tf32: bool, warmup: int, steps: int
) -> tuple[Result, Optional[np.ndarray]]:
  """Times one case in JAX; returns the result and (inference) the final output."""
  precision = None if tf32 else 'highest'
  result = Result('jax', case, jax_precision(case.dtype, tf32))
  model = models.model_from_config(
    config, dtype=case.dtype, precision=precision
  )
  blur, sharp = _inputs(case)
  options = compiler_options()
  if case.mode == 'infer':
    params = _params(config)
    fn = jax.jit(
      lambda p, x: model.apply({'params': p}, x)[0], compiler_options=options
    )
    args = [params, jax.device_put(blur)]
  else:
    tx = train.create_optimizer(config)
    state = jax.jit(
      lambda r: train_state.create_train_state(r, model, tx, config)
    )(jax.random.key(PARAMS_SEED))
    step = functools.partial(
      train.train_step,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=train.create_learning_rate_fn(config),
    )
    fn = jax.jit(step, donate_argnums=(0,), compiler_options=options)
    args = [
      state,
      {'blur': jax.device_put(blur), 'sharp': jax.device_put(sharp)},
    ]
  out = [None]
  try:
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    result.compile_s = time.perf_counter() - start

    def call():
      value = compiled(*args)
      if case.mode == 'train':
        args[0] = value[0]  # the state is donated
      out[0] = jax.block_until_ready(value)

    result.timing = report.time_calls(call, warmup, steps)
    result.flops = report.flops_of(compiled)
    result.xla_bytes = report.xla_memory_of(compiled)
    result.peak_bytes = report.device_memory()[0]
  except Exception as e:  # pylint: disable=broad-except
    if not reference.is_oom(e):
      raise
    result.error = 'OOM'
    return result, None
  return result, np.asarray(out[0]) if case.mode == 'infer' else None


def run_jax_cases(
  spec: str, cases: Sequence[Case], tf32: bool, warmup: int, steps: int
) -> tuple[list[str], list[Result], dict]:
  """(machine lines, results, {case: output}) of `cases` in JAX, in this process."""
  warnings.filterwarnings('ignore', message='Some donated buffers')
  _, config = bench_config(spec)
  results, outputs = [], {}
  for case in cases:
    r, out = run_jax(case, config, tf32, warmup, steps)
    results.append(r)
    if out is not None:
      outputs[case] = out
    print(
      f'jax   {_line(r)} (compile {report.fmt(r.compile_s, ".1f")} s)',
      flush=True,
    )
  return report.machine_lines(), results, outputs


def run_torch_cases(
  spec: str,
  cases: Sequence[Case],
  ref: str,
  tf32: bool,
  device: Optional[str],
  threads: Optional[int],
  warmup: int,
  steps: int,
) -> tuple[str, list[Result], dict]:
  """(PyTorch's description, results, outputs) of `cases` for the release's Net."""
  jax.config.update('jax_platforms', 'cpu')  # JAX only draws the weights here
  _, config = bench_config(spec)
  runner = reference.Reference(
    ref, config, _params(config), device=device, tf32=tf32, threads=threads
  )
  results, outputs = [], {}
  for case in cases:
    r = Result('torch', case, runner.precision(case.dtype))
    blur, sharp = _inputs(case)
    runner.reset_peak()
    try:
      if case.mode == 'infer':
        call, output = runner.infer_call(blur, case.dtype)
      else:
        call, output = runner.train_call(blur, sharp, case.dtype), None
      r.timing = report.time_calls(call, warmup, steps)
      r.peak_bytes = runner.peak_bytes()
      if output is not None:
        outputs[case] = output()
    except Exception as e:  # pylint: disable=broad-except
      if not reference.is_oom(e):
        raise
      r.error = 'OOM'
    results.append(r)
    print(f'torch {_line(r)}', flush=True)
  return runner.describe(), results, outputs


def _line(r: Result) -> str:
  c = r.case
  speed = r.error or f'{report.fmt(r.images_per_s, ".3f")} images/s'
  return f'{c.mode} {c.size} b{c.batch} {c.dtype}: {speed}'


def result_table(results: Sequence[Result], peak) -> list[str]:
  rows = []
  for r in results:
    c, p = r.case, peak(r)
    share = f'{100 * r.tflops / p:.1f}%' if r.tflops and p else 'n/a'
    t = r.timing
    cells = (
      [r.error] + ['n/a'] * 9
      if r.error
      else [
        report.fmt(r.compile_s) if r.framework == 'jax' else '-',
        report.fmt(t.first_s),
        report.fmt(t.median_s and 1e3 * t.median_s, '.1f'),
        report.fmt(t.cpu_s),
        report.fmt(r.images_per_s, '.3f'),
        report.fmt(r.tflops, '.3f'),
        share,
        report.gib(r.xla_bytes),
        report.gib(r.peak_bytes),
      ]
    )
    rows.append(
      [r.framework, c.mode, c.size, c.batch, c.dtype, r.precision, *cells]
    )
  head = [
    'framework',
    'mode',
    'size',
    'batch',
    'dtype',
    'precision',
    'compile s',
    'first call s',
    'median ms',
    'CPU s/call',
    'images/s',
    'TFLOP/s',
    '% of peak',
    'XLA memory',
    'peak memory',
  ]
  return report.table(head, rows)


def ratio_table(results: Sequence[Result]) -> list[str]:
  torch = {r.case: r for r in results if r.framework == 'torch'}
  rows = []
  for r in results:
    t = torch.get(r.case)
    if r.framework != 'jax' or t is None:
      continue
    ok = r.images_per_s and t.images_per_s
    c = r.case
    rows.append(
      [
        c.mode,
        c.size,
        c.batch,
        c.dtype,
        f'{r.precision} / {t.precision}',
        r.error or report.fmt(r.images_per_s, '.3f'),
        t.error or report.fmt(t.images_per_s, '.3f'),
        f'{r.images_per_s / t.images_per_s:.2f}x' if ok else 'n/a',
      ]
    )
  head = [
    'mode',
    'size',
    'batch',
    'dtype',
    'precision (JAX / PyTorch)',
    'JAX images/s',
    'PyTorch images/s',
    'JAX / PyTorch',
  ]
  return report.table(head, rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    '--config',
    default=None,
    help=f'One of {sorted(MODELS)} or configs/*.py (default full; --smoke tiny).',
  )
  p.add_argument(
    '--sizes',
    default=None,
    help='Comma-separated HxW or S (default 256,720x1280).',
  )
  p.add_argument(
    '--train_sizes',
    default=None,
    help='Sizes to train at (default --sizes; on CPU those up to 256x256).',
  )
  p.add_argument(
    '--train_batch',
    default=None,
    help='Default 16 on GPU/TPU up to 256x256, else 1.',
  )
  p.add_argument('--infer_batch', default=None, help='Default 1.')
  p.add_argument(
    '--dtypes',
    default=None,
    help='float32,bfloat16 (default both on GPU/TPU, float32 on CPU).',
  )
  p.add_argument('--modes', default='infer,train')
  p.add_argument(
    '--steps',
    type=int,
    default=None,
    help='Timed calls per case (default 10 on GPU/TPU, 5 on CPU).',
  )
  p.add_argument(
    '--warmup',
    type=int,
    default=None,
    help='Untimed calls first, the first reported (default 2).',
  )
  p.add_argument(
    '--precision',
    default='tf32',
    choices=('tf32', 'highest'),
    help='float32 convolutions on both sides: TF32 allowed, or full float32.',
  )
  p.add_argument(
    '--peak_tflops',
    default=None,
    help="'67' or 'float32:67,tf32:494.7,bfloat16:989' (default: known devices).",
  )
  p.add_argument(
    '--torch_ref',
    default=reference.default_ref(),
    help='Checkout of the official FCN (default $FCN_OFFICIAL_REPO).',
  )
  p.add_argument('--no_torch', action='store_true', help='Ignore --torch_ref.')
  p.add_argument(
    '--torch_device', default=None, help='Default: cuda if available, else cpu.'
  )
  p.add_argument(
    '--torch_threads',
    type=int,
    default=None,
    help="PyTorch intra-op threads (default: PyTorch's).",
  )
  p.add_argument(
    '--rounds',
    type=int,
    default=1,
    help='With --torch_ref: fresh processes per framework, alternating, this many rounds, calls pooled.',
  )
  p.add_argument(
    '--markdown_out', default=None, help='Append the Markdown block here.'
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help=f'Tiny model and sizes, few steps: {SMOKE}.',
  )
  argv = list(sys.argv[1:] if argv is None else argv)
  for arg in argv:
    for old, new in REPLACED.items():
      if arg == old or arg.startswith(old + ('' if '=' in old else '=')):
        p.error(f'{old}: replaced by {new}')
  args = p.parse_args(argv)
  args.argv = argv
  if args.rounds < 1:
    p.error(f'--rounds={args.rounds}: must be at least 1')
  for k, v in SMOKE.items() if args.smoke else ():
    if getattr(args, k) is None:
      setattr(args, k, v)
  args.warmup = 2 if args.warmup is None else args.warmup
  return args


def plan(args: argparse.Namespace, accelerator: bool) -> list[Case]:
  sizes = [parse_size(s) for s in (args.sizes or '256,720x1280').split(',')]
  if args.train_sizes:
    train_sizes = [parse_size(s) for s in args.train_sizes.split(',')]
  else:
    train_sizes = [(h, w) for h, w in sizes if accelerator or h * w <= 256**2]
  dtypes = (
    args.dtypes or ('float32,bfloat16' if accelerator else 'float32')
  ).split(',')
  for text in dtypes:
    if text not in ('float32', 'bfloat16'):
      sys.exit(f'error: --dtypes: {text!r} is not float32 or bfloat16')
  cases = []
  for h, w in dict.fromkeys(sizes + train_sizes):
    for dtype in dtypes:
      for mode in args.modes.split(','):
        if mode not in ('infer', 'train'):
          sys.exit(f'error: --modes: {mode!r} is not infer or train')
        if mode == 'infer' and (h, w) in sizes:
          cases += [
            Case(mode, h, w, b, dtype)
            for b in parse_ints(args.infer_batch or '1')
          ]
        if mode == 'train' and (h, w) in train_sizes:
          big = accelerator and h * w <= 256**2
          batches = parse_ints(args.train_batch or ('16' if big else '1'))
          cases += [Case(mode, h, w, b, dtype) for b in batches]
  return cases


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  spec = args.config or 'full'
  name, config = bench_config(spec)
  why_not = None if args.no_torch else reference.unavailable(args.torch_ref)
  use_torch = not args.no_torch and why_not is None
  if args.torch_ref and not args.no_torch and why_not:
    sys.exit(f'error: {why_not}')
  # Without PyTorch JAX runs here; with it, each framework in fresh processes
  # (this one holds only a device context: JAX allocates as it goes).
  if use_torch:
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  accelerator = jax.default_backend() != 'cpu'
  cases = plan(args, accelerator)
  steps = args.steps or (10 if accelerator else 5)
  tf32 = args.precision == 'tf32'
  jax_args = (spec, cases, tf32, args.warmup, steps)
  torch_desc, outputs = None, {}
  if not use_torch:
    header, results, jax_out = run_jax_cases(*jax_args)
    outputs.update({('jax', c): o for c, o in jax_out.items()})
  else:
    merged = {}
    for i in range(args.rounds):
      for fw in ('torch', 'jax') if i % 2 == 0 else ('jax', 'torch'):
        if fw == 'jax':
          header, results, outs = reference.isolated(run_jax_cases, *jax_args)
        else:
          torch_desc, results, outs = reference.isolated(
            run_torch_cases,
            spec,
            cases,
            args.torch_ref,
            tf32,
            args.torch_device,
            args.torch_threads,
            args.warmup,
            steps,
          )
        outputs.update({(fw, c): o for c, o in outs.items()})
        for r in results:
          if (fw, r.case) in merged:
            merged[(fw, r.case)].timing.extend(r.timing)
          else:
            merged[(fw, r.case)] = r
    results = [merged[(fw, c)] for fw in ('torch', 'jax') for c in cases]
  flops = {r.case: r.flops for r in results if r.framework == 'jax'}
  for r in results:  # PyTorch computes the same function: the same FLOPs
    r.flops = r.flops or flops.get(r.case)
  kind = (
    next(l for l in header if l.startswith('- JAX device'))
    .split('(', 1)[1]
    .rsplit(')', 1)[0]
  )
  peaks = report.parse_peaks(args.peak_tflops)

  def peak(r: Result) -> Optional[float]:
    math = (
      'bfloat16'
      if r.case.dtype == 'bfloat16'
      else ('tf32' if r.precision.startswith('TF32') else 'float32')
    )
    return report.peak_tflops(kind, math, peaks)

  parity = [
    f'- max |JAX - PyTorch| of the final output, {c.size}: '
    f'{float(np.max(np.abs(outputs[("jax", c)] - outputs[("torch", c)]))):.2e}'
    for c in cases
    if ('jax', c) in outputs
    and ('torch', c) in outputs
    and c.dtype == 'float32'
    and c.batch == 1
  ]
  n_rounds = args.rounds if use_torch else 1
  block = [
    f'### FCN throughput: {kind}, model {name}',
    '',
    *header,
    f'- PyTorch: {torch_desc}' if torch_desc else '- PyTorch: not run',
    f'- model: {config.to_dict()["model"]}',
    f'- timing: median of {steps * n_rounds} calls ({steps} per round, {n_rounds} '
    f'round(s); each round runs each framework in a fresh process) after '
    f'{args.warmup} warm-up calls, the first reported; JAX compile time apart',
    f'- precision: --precision={args.precision}: float32 convolutions '
    + (
      'may use TF32 on both sides' if tf32 else 'in full float32 on both sides'
    )
    + ' (the precision column); bfloat16: FCN(dtype=bfloat16) / torch.autocast '
    'with channels_last',
    f'- training: fcn_jax.train.train_step (Charbonnier + {config.loss.edge_weight} '
    'x edge per stage, fixed trust, Adam) / the release\'s losses.py and Adam',
    '- FLOPs: XLA cost analysis of the JAX call, also used for PyTorch; XLA '
    'memory: the executable\'s plan; peak memory: the device\'s (JAX: the process '
    'so far; PyTorch: the case)',
    f'- command: `python bench/throughput.py {" ".join(args.argv)}`',
    *parity,
    '',
    *result_table(results, peak),
    '',
  ]
  if use_torch:
    block += ['JAX / PyTorch:', '', *ratio_table(results), '']
  text = '\n'.join(block)
  print('\n' + text)
  if args.markdown_out:
    with open(args.markdown_out, 'a') as f:
      f.write(text + '\n')
    print(f'appended to {args.markdown_out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
