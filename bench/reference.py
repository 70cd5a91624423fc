"""The authors' PyTorch FCN beside the JAX one: every bench comparing with the release uses it.

* `release_config`: the trainer's config for the release's recipe (fixed trust,
  Charbonnier + 0.05 x edge, Adam 2e-4), a plain attribute dict: no
  ml_collections, so that it runs on an accelerator image with only JAX, Flax,
  Optax, Orbax, NumPy and PyTorch.
* `Reference`: the release's `Net` (Net.py of a checkout of
  github.com/XinyueZhangqdu/FCN) with the JAX parameters, its losses.py and
  torch.optim.Adam, with the precision set like the JAX side's: TF32 on or off
  (torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32), bfloat16 as
  torch.autocast with channels_last.
* `isolated`: runs a function in a fresh process. The frameworks never share a
  process: JAX's allocator keeps what it has grown into and its peak-memory
  counter cannot be reset, PyTorch's caching allocator likewise, and each
  brings its own thread pools; TF32 alone could be set in one process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import pathlib
import sys
import traceback
import types
from typing import Any, Callable, Optional

import numpy as np

# configs/default.py's values of the fields the train step reads, with the
# release's loss (trust 'fixed'); tests/test_bench.py keeps them in step.
RELEASE = dict(
  model=dict(
    n_feat=96,
    scale_unetfeats=48,
    scale_orsnetfeats=32,
    num_cab=8,
    kernel_size=3,
    reduction=4,
    dtype='float32',
    precision=None,
    remat=(),
    tlc_train_size=None,
    use_pb=True,
    use_efem=True,
    use_msam=True,
    use_rim=True,
    stages=4,
  ),
  loss=dict(
    charbonnier_eps=1e-3,
    edge_weight=0.05,
    trust='fixed',
    trust_tau=0.02,
    trust_init=0.5,
  ),
  optimizer=dict(
    learning_rate=2e-4,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    schedule='step',
    decay_every_steps=0,
    decay_factor=0.5,
    warmup_steps=0,
    end_learning_rate=1e-6,
  ),
  num_train_steps=0,
  seed=1234,
)


class Config(dict):
  """A dict read by attribute, as the trainer reads its ConfigDict."""

  def __getattr__(self, name: str) -> Any:
    try:
      value = self[name]
    except KeyError:
      raise AttributeError(name) from None
    return Config(value) if isinstance(value, dict) else value

  def to_dict(self) -> dict:
    return {
      k: Config(v).to_dict() if isinstance(v, dict) else v
      for k, v in self.items()
    }


def release_config(widths: Optional[dict] = None, **model: Any) -> Config:
  """The release's recipe; `widths` (a presets entry) and `model` override FCN fields."""
  config = Config(
    {k: dict(v) if isinstance(v, dict) else v for k, v in RELEASE.items()}
  )
  config['model'].update(widths or {}, **model)
  return config


def unavailable(ref: Optional[str]) -> Optional[str]:
  """Why the reference cannot run (None: it can)."""
  if not ref:
    return (
      'no checkout of the release given (--torch_ref or $FCN_OFFICIAL_REPO)'
    )
  if not (pathlib.Path(ref) / 'Net.py').is_file():
    return f'--torch_ref={ref}: no Net.py there'
  if importlib.util.find_spec('torch') is None:
    return 'PyTorch is not installed'
  return None


def _load_module(name: str, path: pathlib.Path) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_official(ref: str) -> tuple[type, types.ModuleType]:
  """The release's `Net` class and its losses module, imported from the checkout."""
  if 'matplotlib.pyplot' not in sys.modules:  # Net.py imports it, never uses it
    try:
      import matplotlib.pyplot  # noqa: F401  pylint: disable=g-import-not-at-top
    except ImportError:
      mpl = types.ModuleType('matplotlib')
      mpl.pyplot = types.ModuleType('matplotlib.pyplot')
      sys.modules.update({'matplotlib': mpl, 'matplotlib.pyplot': mpl.pyplot})
  root = pathlib.Path(ref)
  net = _load_module('fcn_official_net', root / 'Net.py')
  return net.Net, _load_module('fcn_official_losses', root / 'losses.py')


def is_oom(e: BaseException) -> bool:
  """Whether `e` is an out-of-memory error of XLA or PyTorch."""
  text = f'{type(e).__name__} {e}'.lower()
  return 'resource_exhausted' in text or 'out of memory' in text


class Reference:
  """The official Net with given JAX parameters, on one torch device."""

  def __init__(
    self,
    ref: str,
    config: Config,
    params: Any,
    *,
    device: Optional[str] = None,
    tf32: bool = True,
    threads: Optional[int] = None,
  ):
    import torch  # pylint: disable=g-import-not-at-top
    from fcn_jax import convert  # pylint: disable=g-import-not-at-top

    try:  # pylint: disable=g-import-not-at-top
      from bench import torch_weights
    except ImportError:  # run as a script from bench/
      import torch_weights  # pytype: disable=import-error

    self.torch = torch
    if threads:
      torch.set_num_threads(threads)
    self.device = torch.device(
      device or ('cuda' if torch.cuda.is_available() else 'cpu')
    )
    self.tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    self.net_cls, self.losses = load_official(ref)
    model = config.model
    self.fields = {
      k: model[k]
      for k in (
        'n_feat',
        'scale_unetfeats',
        'scale_orsnetfeats',
        'num_cab',
        'kernel_size',
        'reduction',
      )
    }
    self.optimizer, self.edge_weight = config.optimizer, config.loss.edge_weight
    self.state_dict = {
      k: torch.from_numpy(np.ascontiguousarray(v))
      for k, v in torch_weights.flax_to_torch(
        _to_numpy(params), self.fields['num_cab']
      ).items()
    }
    self.unused_prefix = convert.UNUSED_PREFIX

  def describe(self) -> str:
    """The device, versions and settings, in one line."""
    torch, desc = self.torch, str(self.device)
    if self.device.type == 'cuda':
      desc += (
        f' ({torch.cuda.get_device_name(self.device)}, CUDA '
        f'{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})'
      )
    return (
      f'torch {torch.__version__} on {desc}, {torch.get_num_threads()} '
      f'intra-op threads, allow_tf32={self.tf32}, cudnn.benchmark'
    )

  def precision(self, dtype: str) -> str:
    """What float32 or bfloat16 means on this side, for the tables."""
    if dtype == 'bfloat16':
      return 'autocast bf16, channels_last'
    if self.device.type != 'cuda':
      return 'fp32 (CPU)'
    return 'TF32' if self.tf32 else 'fp32'

  def net(self, dtype: str = 'float32'):
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
    net = net.to(self.device)
    if dtype == 'bfloat16':
      net = net.to(memory_format=torch.channels_last)
    return net

  def tensor(self, images: np.ndarray, dtype: str = 'float32'):
    """NHWC float32 images -> an NCHW tensor on the device (channels_last for bf16)."""
    t = self.torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(
      self.device
    )
    if dtype == 'bfloat16':
      t = t.contiguous(memory_format=self.torch.channels_last)
    return t

  def autocast(self, dtype: str):
    if dtype == 'float32':
      return contextlib.nullcontext()
    return self.torch.autocast(
      self.device.type, dtype=getattr(self.torch, dtype)
    )

  def sync(self) -> None:
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize(self.device)

  def infer_call(
    self, blur: np.ndarray, dtype: str
  ) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
    """(one synchronised forward pass, the last call's final output as NHWC float32)."""
    torch, net, x = self.torch, self.net(dtype).eval(), self.tensor(blur, dtype)
    out = []

    def call():
      with torch.no_grad(), self.autocast(dtype):
        out[:] = [net(x)[0]]
      self.sync()

    return call, lambda: out[0].float().cpu().numpy().transpose(0, 2, 3, 1)

  def train_call(
    self, blur: np.ndarray, sharp: np.ndarray, dtype: str
  ) -> Callable[[], None]:
    """One synchronised training step of the release: its losses, Adam."""
    torch, net = self.torch, self.net(dtype).train()
    x, y = self.tensor(blur, dtype), self.tensor(sharp, dtype)
    opt = self.optimizer
    optimizer = torch.optim.Adam(
      net.parameters(),
      lr=opt.learning_rate,
      betas=(opt.b1, opt.b2),
      eps=opt.eps,
    )
    char, edge = self.losses.CharbonnierLoss(), self.losses.EdgeLoss()
    edge.kernel = edge.kernel.to(
      self.device
    )  # it picks CUDA whenever available

    def call():
      optimizer.zero_grad(set_to_none=True)
      with self.autocast(dtype):
        restored = net(x)
        loss = sum(char(r, y) for r in restored) + self.edge_weight * sum(
          edge(r, y) for r in restored
        )
      loss.backward()
      optimizer.step()
      self.sync()

    return call

  def reset_peak(self) -> None:
    if self.device.type == 'cuda':
      self.torch.cuda.empty_cache()
      self.torch.cuda.reset_peak_memory_stats(self.device)

  def peak_bytes(self) -> Optional[int]:
    if self.device.type != 'cuda':
      return None
    return int(self.torch.cuda.max_memory_allocated(self.device))


def _to_numpy(tree: Any) -> Any:
  import jax  # pylint: disable=g-import-not-at-top

  return jax.tree.map(np.asarray, jax.device_get(tree))


def _child(conn, fn: Callable, args: tuple, kwargs: dict) -> None:
  try:
    conn.send((True, fn(*args, **kwargs)))
  except BaseException:  # pylint: disable=broad-except
    conn.send((False, traceback.format_exc()))
  finally:
    conn.close()


class IsolatedError(RuntimeError):
  """The function run by `isolated` raised, died or ran out of time."""


def isolated(
  fn: Callable, *args: Any, timeout: Optional[float] = None, **kwargs: Any
) -> Any:
  """fn(*args, **kwargs) in a fresh (spawned) process; its picklable result.

  `fn` must be importable (a module-level function). The child inherits the
  environment (JAX_PLATFORMS, XLA flags) and sys.path. Past `timeout`
  seconds the child is killed and IsolatedError raised.
  """
  ctx = multiprocessing.get_context('spawn')
  receive, send = ctx.Pipe(duplex=False)
  proc = ctx.Process(target=_child, args=(send, fn, args, kwargs))
  proc.start()
  send.close()
  try:
    if not receive.poll(timeout):
      raise IsolatedError(f'{fn.__name__}: no result after {timeout:.0f} s')
    ok, value = receive.recv()
    proc.join(30)
  except EOFError:
    proc.join()
    raise IsolatedError(
      f'{fn.__name__}: the process died (exit status {proc.exitcode})'
    ) from None
  finally:
    if proc.is_alive():
      proc.kill()
      proc.join()
  if not ok:
    raise IsolatedError(value)
  return value


def default_ref() -> Optional[str]:
  return os.environ.get('FCN_OFFICIAL_REPO')
