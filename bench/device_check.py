r"""The one prepared accelerator check: one command, at most 8 minutes, one Markdown block.

  python bench/device_check.py --torch_ref=/path/to/FCN --markdown_out=check.md
  python bench/device_check.py --smoke        # the CPU, tiny sizes (make test)
  PYTHONPATH=. python bench/device_check.py   # a checkout, package not installed

Parts, each in a fresh process with its own time budget (a part that runs
out of time or memory is reported as such and the others still run):
  * train: the trainer's own step (fcn_jax.train.train_step) at crop 256, for
    float32 (TF32, XLA's default precision) and bfloat16, with and without
    remat (REMAT: one line per variant), at the largest batch that fits one
    device: a first batch from the memory per image, then corrected from XLA's
    memory analysis of the compiled step, halved on an out-of-memory error;
    compile time, steps/s, images/s, peak memory (memory_stats), MFU from
    XLA's FLOP count against the device's peak (bench/report.py);
  * infer: 720x1280 latency at batch 1, float32, bfloat16 and tiled;
  * eval: the evaluator's step (PSNR/SSIM included) on 720x1280 batches;
  * torch: the authors' Net and losses (bench/reference.py) at the same
    settings (TF32 on, autocast bf16 with channels_last), for the ratios.
Needs only JAX, Flax, Optax, Orbax, NumPy (+ PyTorch): no TensorFlow, clu,
ml_collections or Pillow. Compilations are cached under --cache_dir, so a
rerun compiles little.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from typing import Any, Optional, Sequence

import numpy as np

try:  # imported as bench.<name> (tests), or run as bench/<name>.py
  from bench import reference
  from bench import report
except ImportError:
  import reference  # pytype: disable=import-error
  import report  # pytype: disable=import-error


# Remat variants: name -> config.model fields. A new variant is one line.
REMAT = {
  'none': dict(remat=()),
  'stages': dict(remat=(0, 1, 2, 3)),
}
# A first guess of the training memory per 256x256 image (GiB), by dtype and
# remat; the compiled step's memory analysis corrects it.
PER_IMAGE_GIB = {
  ('float32', 'none'): 6.5,
  ('bfloat16', 'none'): 3.5,
}
PER_IMAGE_REMAT_GIB = {'float32': 1.5, 'bfloat16': 0.9}
GOALS = dict(ratio_bf16=1.5, mfu_bf16=0.40, infer_720p_s=0.1)

FULL = dict(
  widths='full', crop=256, frame=(720, 1280), tile=256, overlap=32,
  eval_batch=4, steps=20, budgets=dict(train=75, infer=60, eval=45, torch=90),
)  # fmt: skip
SMOKE = dict(
  widths='tiny', crop=32, frame=(32, 48), tile=16, overlap=8, eval_batch=2,
  steps=1, budgets=dict(train=240, infer=240, eval=240, torch=240), batch=1,
  torch_threads=1,
)  # fmt: skip


def _setup(cache_dir: Optional[str]) -> Any:
  """JAX in a part's process: the persistent compilation cache, quiet donation."""
  import jax  # pylint: disable=g-import-not-at-top

  warnings.filterwarnings('ignore', message='Some donated buffers')
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
  return jax


def _math(jax: Any, dtype: str) -> str:
  if dtype == 'bfloat16':
    return 'bfloat16'
  return 'tf32' if jax.default_backend() == 'gpu' else 'float32'


def _batches(rng, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  shape = (n, h, w, 3)
  return rng.random(shape, np.float32), rng.random(shape, np.float32)


def train_part(
  s: dict, dtype: str, remat: str, cache_dir: Optional[str]
) -> dict:
  """The trainer's step at the largest batch that fits: one row."""
  jax = _setup(cache_dir)
  from fcn_jax import models  # pylint: disable=g-import-not-at-top
  from fcn_jax import train  # pylint: disable=g-import-not-at-top
  from fcn_jax import train_state  # pylint: disable=g-import-not-at-top
  from fcn_jax.cpu import compiler_options  # pylint: disable=g-import-not-at-top
  from fcn_jax.models import presets  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  budget = s['budgets']['train']
  config = reference.release_config(
    presets.PRESETS[s['widths']], **REMAT[remat]
  )
  model = models.model_from_config(config, dtype=dtype)
  tx = train.create_optimizer(config)
  step = jax.jit(
    functools.partial(
      train.train_step,
      model=model,
      tx=tx,
      config=config,
      learning_rate_fn=train.create_learning_rate_fn(config),
    ),
    donate_argnums=(0,),
    compiler_options=compiler_options(),
  )
  init = jax.jit(lambda r: train_state.create_train_state(r, model, tx, config))
  _, limit = report.device_memory()
  per_image = PER_IMAGE_GIB.get((dtype, remat), PER_IMAGE_REMAT_GIB[dtype])
  guess = int(0.85 * limit / (per_image * 2**30)) if limit else 1
  batch = s.get('batch') or max(1, guess)
  row = dict(part='train', dtype=dtype, remat=remat, math=_math(jax, dtype))
  notes, tried = [], set()
  rng = np.random.default_rng(0)
  while batch not in tried and time.perf_counter() - start < budget:
    tried.add(batch)
    state = init(jax.random.key(0))
    blur, sharp = _batches(rng, batch, s['crop'], s['crop'])
    data = {'blur': jax.device_put(blur), 'sharp': jax.device_put(sharp)}
    try:
      t0 = time.perf_counter()
      compiled = step.lower(state, data).compile()
      compile_s = time.perf_counter() - t0
      planned = report.xla_memory_of(compiled)
      if limit and planned and planned > 0.95 * limit:
        notes.append(f'b{batch}: plan {report.gib(planned)} > limit')
        batch = max(1, int(batch * 0.9 * limit / planned))
        continue
      holder = [state]

      def call():
        holder[0], metrics = compiled(holder[0], data)  # pylint: disable=cell-var-from-loop
        jax.block_until_ready(metrics)

      left = budget - (time.perf_counter() - start)
      timing = report.time_calls(call, 1, s['steps'], budget_s=max(left, 1))
    except Exception as e:  # pylint: disable=broad-except
      if not reference.is_oom(e):
        raise
      notes.append(f'b{batch}: OOM')
      batch = max(1, batch // 2)
      continue
    peak, _ = report.device_memory()
    flops = report.flops_of(compiled)
    row.update(
      batch=batch, compile_s=compile_s, step_s=timing.median_s,
      images_s=batch / timing.median_s, flops=flops, peak=peak,
      planned=planned, calls=len(timing.times), notes=notes,
    )  # fmt: skip
    # Grow once when the plan leaves much of the device free.
    if (
      limit and planned and planned < 0.6 * limit and not s.get('batch')
      and time.perf_counter() - start < budget / 2
    ):  # fmt: skip
      grown = int(batch * 0.85 * limit / planned)
      if grown > batch and grown not in tried:
        notes.append(f'b{batch} fits ({report.gib(planned)}): try b{grown}')
        batch = grown
        continue
    return row
  if 'batch' in row:
    return row
  return dict(row, error='; '.join(notes) or 'out of time')


def infer_part(s: dict, cache_dir: Optional[str]) -> list[dict]:
  """720x1280 latency at batch 1: float32, bfloat16, tiled (float32)."""
  jax = _setup(cache_dir)
  from fcn_jax import inference  # pylint: disable=g-import-not-at-top
  from fcn_jax.cpu import compiler_options  # pylint: disable=g-import-not-at-top
  from fcn_jax.models import presets  # pylint: disable=g-import-not-at-top

  start, budget = time.perf_counter(), s['budgets']['infer']
  config = reference.release_config(presets.PRESETS[s['widths']])
  h, w = s['frame']
  x = jax.device_put(np.random.default_rng(0).random((1, h, w, 3), np.float32))
  rows = []
  for name, dtype, tiled in (
    ('float32', 'float32', False),
    ('bfloat16', 'bfloat16', False),
    (f'tiled {s["tile"]}/{s["overlap"]}', 'float32', True),
  ):
    row = dict(part='infer', variant=name, dtype=dtype, math=_math(jax, dtype))
    rows.append(row)
    left = budget - (time.perf_counter() - start)
    if left <= 0:
      row['error'] = 'out of time'
      continue
    try:
      from fcn_jax import models  # pylint: disable=g-import-not-at-top

      model = models.model_from_config(config, dtype=dtype)
      params = jax.jit(functools.partial(models.init_params, model))(
        jax.random.key(0)
      )
      if tiled:
        fn = functools.partial(
          inference.restore_tiled, model, tile=s['tile'], overlap=s['overlap']
        )
      else:
        fn = functools.partial(inference.restore, model)
      t0 = time.perf_counter()
      compiled = (
        jax.jit(fn, compiler_options=compiler_options())
        .lower(params, x)
        .compile()
      )
      row['compile_s'] = time.perf_counter() - t0
      call = lambda: jax.block_until_ready(compiled(params, x))  # pylint: disable=cell-var-from-loop
      timing = report.time_calls(call, 1, s['steps'] * 2, budget_s=left / 2)
      row.update(latency_s=timing.median_s, flops=report.flops_of(compiled))
    except Exception as e:  # pylint: disable=broad-except
      if not reference.is_oom(e):
        raise
      row['error'] = 'OOM'
  rows[-1]['peak'] = report.device_memory()[0]
  return rows


def eval_part(s: dict, cache_dir: Optional[str]) -> dict:
  """The evaluator's step (restore + PSNR/SSIM) on 720x1280 batches, images/s."""
  jax = _setup(cache_dir)
  from fcn_jax.evaluators import full_image  # pylint: disable=g-import-not-at-top
  from fcn_jax import models  # pylint: disable=g-import-not-at-top
  from fcn_jax.models import presets  # pylint: disable=g-import-not-at-top

  start, budget = time.perf_counter(), s['budgets']['eval']
  config = reference.release_config(presets.PRESETS[s['widths']])
  model = models.model_from_config(config)
  params = jax.jit(functools.partial(models.init_params, model))(
    jax.random.key(0)
  )
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  step = full_image.make_eval_step(model, mesh)
  h, w = s['frame']
  batch = s['eval_batch']
  rng = np.random.default_rng(0)
  notes = []
  while batch >= 1 and time.perf_counter() - start < budget:
    blur, sharp = _batches(rng, batch, h, w)
    try:
      t0 = time.perf_counter()
      compiled = step.lower(params, blur, sharp).compile()
      compile_s = time.perf_counter() - t0
      left = budget - (time.perf_counter() - start)
      call = lambda: jax.block_until_ready(compiled(params, blur, sharp))  # pylint: disable=cell-var-from-loop
      timing = report.time_calls(call, 1, s['steps'], budget_s=max(left, 1))
    except Exception as e:  # pylint: disable=broad-except
      if not reference.is_oom(e):
        raise
      notes.append(f'b{batch}: OOM')
      batch //= 2
      continue
    return dict(
      part='eval', batch=batch, compile_s=compile_s,
      images_s=batch / timing.median_s, peak=report.device_memory()[0],
      notes=notes,
    )  # fmt: skip
  return dict(part='eval', error='; '.join(notes) or 'out of time')


def torch_part(s: dict, ref: str, batches: dict) -> list[dict]:
  """The release's Net: training at the JAX batches ({dtype: batch}), 720p inference."""
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update('jax_platforms', 'cpu')  # JAX only draws the weights here
  from fcn_jax import models  # pylint: disable=g-import-not-at-top
  from fcn_jax.models import presets  # pylint: disable=g-import-not-at-top

  start, budget = time.perf_counter(), s['budgets']['torch']
  config = reference.release_config(presets.PRESETS[s['widths']])
  model = models.model_from_config(config)
  params = jax.jit(functools.partial(models.init_params, model))(
    jax.random.key(0)
  )
  runner = reference.Reference(
    ref, config, params, tf32=True, threads=s.get('torch_threads')
  )
  rng = np.random.default_rng(0)
  rows = []
  jobs = [('train', d, b) for d, b in batches.items()]
  jobs += [('infer', d, 1) for d in ('float32', 'bfloat16')]
  for mode, dtype, batch in jobs:
    row = dict(
      part='torch', mode=mode, dtype=dtype, math=runner.precision(dtype)
    )
    rows.append(row)
    while batch >= 1:
      left = budget - (time.perf_counter() - start)
      if left <= 0:
        row['error'] = 'out of time'
        break
      runner.reset_peak()
      try:
        if mode == 'train':
          blur, sharp = _batches(rng, batch, s['crop'], s['crop'])
          call = runner.train_call(blur, sharp, dtype)
        else:
          blur, _ = _batches(rng, 1, *s['frame'])
          call, _ = runner.infer_call(blur, dtype)
        timing = report.time_calls(call, 1, s['steps'], budget_s=left / 3)
      except Exception as e:  # pylint: disable=broad-except
        if not reference.is_oom(e):
          raise
        batch //= 2
        continue
      row.update(batch=batch, step_s=timing.median_s, peak=runner.peak_bytes())
      row['images_s'] = batch / timing.median_s
      break
    else:
      row['error'] = 'OOM at batch 1'
  rows.append(dict(part='torch', describe=runner.describe()))
  return rows


def _run(fn, *args, timeout: float) -> Any:
  """A part in a fresh process; an error row when it fails or runs out of time."""
  try:
    return reference.isolated(fn, *args, timeout=timeout)
  except reference.IsolatedError as e:
    last = (str(e).strip().splitlines() or ['failed'])[-1]
    print(f'{fn.__name__}{args[1:3]}: {last}', flush=True)
    return dict(error=last[:160])


def _mfu(row: dict, kind: str, peaks: dict) -> Optional[float]:
  peak = report.peak_tflops(kind, row.get('math', ''), peaks)
  if not (peak and row.get('flops') and row.get('step_s')):
    return None
  return row['flops'] / row['step_s'] / 1e12 / peak


def render(
  settings: dict, header: list[str], rows: dict, kind: str, argv: Sequence[str],
  peaks: dict, elapsed: float,
) -> str:  # fmt: skip
  """The Markdown block."""
  fmt, gib = report.fmt, report.gib
  train_rows = []
  for (dtype, remat), r in rows['train'].items():
    mfu = _mfu(r, kind, peaks)
    train_rows.append([
      dtype, r.get('math', 'n/a'), remat, r.get('batch', 'n/a'),
      fmt(r.get('compile_s'), '.1f'), fmt(r.get('step_s') and 1 / r['step_s'], '.2f'),
      fmt(r.get('images_s'), '.1f'), gib(r.get('peak')), gib(r.get('planned')),
      fmt(mfu and 100 * mfu, '.1f', '%'),
      r.get('error') or '; '.join(r.get('notes', [])) or '',
    ])  # fmt: skip
  infer_rows = [
    [r.get('variant', '?'), r.get('math', 'n/a'), fmt(r.get('compile_s'), '.1f'),
     fmt(r.get('latency_s'), '.3f'), r.get('error', '')]
    for r in rows['infer']
  ]  # fmt: skip
  ev = rows['eval']
  torch_rows = [r for r in rows['torch'] if 'mode' in r]
  desc = next((r['describe'] for r in rows['torch'] if 'describe' in r), None)
  ratio_rows, ratios = [], {}
  for r in torch_rows:
    if r['mode'] == 'train':
      j = rows['train'].get((r['dtype'], 'none'), {})
    else:
      j = next((x for x in rows['infer'] if x.get('variant') == r['dtype']), {})
      j = dict(j, images_s=j.get('latency_s') and 1 / j['latency_s'])
    ratio = None
    if j.get('images_s') and r.get('images_s'):
      ratio = j['images_s'] / r['images_s']
    ratios[(r['mode'], r['dtype'])] = ratio
    ratio_rows.append([
      r['mode'], r['dtype'], r.get('math', 'n/a'), r.get('batch', 'n/a'),
      fmt(j.get('images_s'), '.2f'), fmt(r.get('images_s'), '.2f'),
      gib(r.get('peak')), fmt(ratio, '.2f', 'x'), r.get('error', ''),
    ])  # fmt: skip
  mfu_bf16 = max(
    (m for (d, _), r in rows['train'].items() if d == 'bfloat16'
     for m in [_mfu(r, kind, peaks)] if m is not None), default=None,
  )  # fmt: skip
  latency = next(
    (
      r.get('latency_s')
      for r in rows['infer']
      if r.get('dtype') == 'bfloat16' and 'tiled' not in r.get('variant', '')
    ),
    None,
  )
  fastest = min(
    (r['latency_s'] for r in rows['infer'] if r.get('latency_s')), default=None
  )
  ratio_bf16 = ratios.get(('train', 'bfloat16'))
  h, w = settings['frame']
  c = settings['crop']
  block = [
    f'### FCN device check: {kind}',
    '',
    *header,
    f'- PyTorch: {desc}' if desc else f'- PyTorch: not run ({rows["torch_why"]})',
    f'- model: {settings["widths"]} widths; train crop {c}x{c}; inference and '
    f'evaluation {h}x{w}; command `python bench/device_check.py {" ".join(argv)}`; '
    f'{elapsed:.0f} s in all',
    '- precision: float32 = XLA\'s default (TF32 convolutions on NVIDIA) and '
    'PyTorch with allow_tf32; bfloat16 = FCN(dtype=bfloat16), float32 '
    'parameters and optimizer / torch.autocast(bfloat16) with channels_last',
    '- MFU: XLA\'s FLOP count of the compiled step / step time / the device\'s '
    'dense peak for the math (bench/report.py PEAK_TFLOPS); peak memory: '
    'memory_stats peak_bytes_in_use of the part\'s process; plan: XLA\'s '
    'memory analysis of the step',
    '',
    '| goal | measured | |',
    '|---|---|---|',
    f'| JAX >= {GOALS["ratio_bf16"]}x PyTorch, bf16 training | '
    f'{fmt(ratio_bf16, ".2f", "x")} | {report.goal(ratio_bf16, GOALS["ratio_bf16"])} |',
    f'| bf16 MFU >= {100 * GOALS["mfu_bf16"]:.0f}% | '
    f'{fmt(mfu_bf16 and 100 * mfu_bf16, ".1f", "%")} | {report.goal(mfu_bf16, GOALS["mfu_bf16"])} |',
    f'| {h}x{w} inference <= {GOALS["infer_720p_s"]} s | {fmt(fastest, ".3f", " s")} '
    f'(bf16 {fmt(latency, ".3f", " s")}) | {report.goal(fastest, GOALS["infer_720p_s"], higher=False)} |',
    '',
    f'Training, the trainer\'s step at {c}x{c}, the largest batch that fits:',
    '',
    *report.table(['dtype', 'math', 'remat', 'batch', 'compile s', 'steps/s', 'images/s', 'peak memory', 'XLA plan', 'MFU', 'notes'], train_rows),
    '',
    f'Inference, {h}x{w}, batch 1:',
    '',
    *report.table(['variant', 'math', 'compile s', 'latency s', 'notes'], infer_rows),
    '',
    f'Evaluation step (restore + PSNR/SSIM), {h}x{w}: batch {ev.get("batch", "n/a")}, '
    f'{fmt(ev.get("images_s"), ".2f")} images/s, compile {fmt(ev.get("compile_s"), ".1f")} s, '
    f'peak {gib(ev.get("peak"))}' + (f' ({ev["error"]})' if ev.get('error') else ''),
    '',
  ]  # fmt: skip
  if torch_rows:
    block += [
      'The authors\' PyTorch Net and losses, same settings, same run (JAX '
      'without remat):',
      '',
      *report.table(['mode', 'dtype', 'PyTorch math', 'batch', 'JAX images/s', 'PyTorch images/s', 'PyTorch peak', 'JAX / PyTorch', 'notes'], ratio_rows),
      '',
    ]  # fmt: skip
  return '\n'.join(block)


def header_part() -> tuple[list[str], str]:
  """(machine lines, device kind) from a process of its own."""
  import jax  # pylint: disable=g-import-not-at-top

  return report.machine_lines(), jax.devices()[0].device_kind


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    '--torch_ref',
    default=reference.default_ref(),
    help='Checkout of the official FCN (default $FCN_OFFICIAL_REPO).',
  )
  p.add_argument('--markdown_out', default=None, help='Append the block here.')
  p.add_argument(
    '--cache_dir',
    default=os.path.expanduser('~/.cache/fcn_jax/xla'),
    help="JAX's persistent compilation cache ('' for none).",
  )
  p.add_argument(
    '--peak_tflops',
    default=None,
    help="'bfloat16:989,tf32:494.7' (default: known devices).",
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help='The CPU, tiny widths, 32x32, one step.',
  )
  argv = list(sys.argv[1:] if argv is None else argv)
  args = p.parse_args(argv)
  settings = dict(SMOKE if args.smoke else FULL)
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  if args.smoke:
    os.environ['JAX_PLATFORMS'] = 'cpu'
  start = time.perf_counter()
  budgets = settings['budgets']
  header, kind = reference.isolated(header_part, timeout=120)
  print('\n'.join(header), flush=True)
  rows = dict(train={}, infer=[], eval={}, torch=[])
  cache = args.cache_dir or None
  for dtype in ('float32', 'bfloat16'):
    for remat in REMAT:
      r = _run(
        train_part, settings, dtype, remat, cache, timeout=budgets['train'] + 60
      )
      rows['train'][(dtype, remat)] = dict(dict(dtype=dtype, remat=remat), **r)
      print(
        f'train {dtype} remat={remat}: {r.get("error") or report.fmt(r.get("images_s"), ".2f") + " images/s"}',
        flush=True,
      )
  infer = _run(infer_part, settings, cache, timeout=budgets['infer'] + 60)
  rows['infer'] = infer if isinstance(infer, list) else [infer]
  rows['eval'] = _run(eval_part, settings, cache, timeout=budgets['eval'] + 60)
  why_not = reference.unavailable(args.torch_ref)
  rows['torch_why'] = why_not
  if why_not is None:
    batches = {
      d: rows['train'][(d, 'none')].get('batch') or settings.get('batch') or 1
      for d in ('float32', 'bfloat16')
    }
    out = _run(
      torch_part,
      settings,
      args.torch_ref,
      batches,
      timeout=budgets['torch'] + 60,
    )
    rows['torch'] = out if isinstance(out, list) else []
    if not isinstance(out, list):
      rows['torch_why'] = out.get('error')
  text = render(
    settings, header, rows, kind, argv, report.parse_peaks(args.peak_tflops),
    time.perf_counter() - start,
  )  # fmt: skip
  print('\n' + text, flush=True)
  if args.markdown_out:
    with open(args.markdown_out, 'a') as f:
      f.write(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
