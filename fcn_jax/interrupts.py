"""Ending a run cleanly: SIGTERM and Ctrl-C save and exit, errors end it in one line.

`StopSignals` tells the training loop at which step to save and stop. A run
that ends with an error prints one line naming the cause (`exit_with_error`);
the full traceback, and the background errors of writers that a failure
leaves behind, go to `error.log` in the workdir (`capture_background_errors`),
or to the terminal with --verbose.
"""

from __future__ import annotations

import logging as py_logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Optional

from absl import logging
from etils import epath
import jax

from fcn_jax import checkpoint

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, the shell's convention


class StopSignals:
  """Whether to save and stop at a step because of SIGTERM or SIGINT (Ctrl-C).

  A single process: Python handlers set a flag; the loop finishes its step,
  saves and stops. A second SIGINT aborts at once (exit 130), leaving the
  last complete checkpoint.

  A job of several processes: JAX's preemption notifier (installed by
  `jax.distributed.initialize`) catches SIGTERM on whichever process gets it
  and the preemption sync point picks one step at which every process returns
  True; a Python SIGTERM handler would displace that notifier, so none is
  installed. SIGINT takes the same path: its handler sends this process a
  SIGTERM.

  Call `__call__` at every step on every process.
  """

  def __init__(self, manager: Any):
    self._manager = manager
    self._distributed = jax.distributed.is_initialized()
    self.received: Optional[str] = None  # 'SIGTERM' or 'SIGINT', once caught
    self._previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
      return  # signal handlers can only be set from the main thread
    if not self._distributed:
      self._install(signal.SIGTERM, self._on_sigterm)
    # A background job started with SIGINT ignored keeps ignoring it.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
      self._install(signal.SIGINT, self._on_sigint)

  def _install(self, signum: int, handler) -> None:
    self._previous[signum] = signal.signal(signum, handler)

  def _on_sigterm(self, *_) -> None:
    self.received = self.received or 'SIGTERM'

  def _on_sigint(self, *_) -> None:
    if self.received == 'SIGINT':
      _write_stderr(
        'SIGINT again: aborting; the run resumes from its last complete '
        'checkpoint'
      )
      os._exit(INTERRUPTED_EXIT_CODE)  # pylint: disable=protected-access
    self.received = 'SIGINT'
    _write_stderr(
      'SIGINT: saving at the end of this step and exiting (Ctrl-C again aborts)'
    )
    if self._distributed:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

  def __call__(self, step: int) -> bool:
    if self._manager.reached_preemption(step):
      self.received = self.received or 'SIGTERM'
      return True
    return not self._distributed and self.received is not None

  @property
  def name(self) -> str:
    """The signal that stopped the run (SIGTERM when another process got it)."""
    return self.received or 'SIGTERM'

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


def _write_stderr(line: str) -> None:
  # Async-signal-safe enough: no locks, unlike logging or print.
  os.write(2, (line + '\n').encode())


# ----------------------------------------------------------------------------
# Errors in one line.

# Errors whose message is already the one line to print.
ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (
  FileNotFoundError,
  checkpoint.CheckpointSaveError,
  checkpoint.CheckpointUnreadableError,
  checkpoint.IncompatibleCheckpointError,
)


# Bad input found at start-up: nothing is written to the workdir for these.
BAD_INPUT: tuple[type[BaseException], ...] = (FileNotFoundError,)


def log_path(workdir: str) -> epath.Path:
  """Where this process writes tracebacks: WORKDIR/error.log (process 0)."""
  index = jax.process_index()
  name = 'error.log' if index == 0 else f'error.process{index}.log'
  return checkpoint.absolute(workdir) / name


def _append(path: epath.Path, text: str) -> bool:
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('a') as f:
      f.write(f'--- {time.strftime("%Y-%m-%d %H:%M:%S")}\n{text}\n')
    return True
  except Exception:  # pylint: disable=broad-except
    return False


class _FileHandler(py_logging.Handler):
  """Appends records to a file, created on first use."""

  def __init__(self, path: epath.Path):
    super().__init__()
    self._path = path

  def emit(self, record: py_logging.LogRecord) -> None:
    _append(self._path, self.format(record))


def capture_background_errors(workdir: str) -> None:
  """Sends what background threads print when a save or read fails (the
  `Event loop is closed` of TensorStore callbacks, asyncio's unretrieved task
  errors) to the log file instead of the terminal."""
  path = log_path(workdir)

  def unraisable(info) -> None:
    _append(
      path,
      f'{info.err_msg or "Exception ignored in"}: {info.object!r}\n'
      + ''.join(
        traceback.format_exception(
          info.exc_type, info.exc_value, info.exc_traceback
        )
      ),
    )

  def thread_exception(args) -> None:
    _append(
      path,
      f'in thread {args.thread.name if args.thread else "?"}:\n'
      + ''.join(
        traceback.format_exception(
          args.exc_type, args.exc_value, args.exc_traceback
        )
      ),
    )

  sys.unraisablehook = unraisable
  threading.excepthook = thread_exception
  asyncio_logger = py_logging.getLogger('asyncio')
  asyncio_logger.addHandler(_FileHandler(path))
  asyncio_logger.propagate = False


def error_line(error: BaseException) -> str:
  """The one line that names why the run ended."""
  if isinstance(error, KeyboardInterrupt):
    return 'interrupted (SIGINT) before training started; nothing was saved'
  if isinstance(error, ONE_LINE_ERRORS) or _is_one_line(error):
    return str(error).strip()
  return checkpoint.cause_line(error)


def _is_one_line(error: BaseException) -> bool:
  # The trainer's own errors (ConfigError, NonFiniteLossError) are one line by
  # design; matched by name so this module does not import the trainer.
  return type(error).__name__ in ('ConfigError', 'NonFiniteLossError')


def exit_with_error(
  error: BaseException, workdir: Optional[str], *, verbose: bool = False
) -> None:
  """Prints `error: <cause>` and exits 1 (130 for Ctrl-C) at once.

  The traceback goes to WORKDIR/error.log (the terminal with `verbose`). The
  process exits without Python's shutdown: background writers the failure
  left behind would otherwise print their own errors after the line, and a
  process of a job of several must not wait for the others at JAX's shutdown
  barrier (they stop with an error when its heartbeats stop).
  """
  text = ''.join(traceback.format_exception(error)).rstrip()
  line = f'error: {error_line(error)}'
  if verbose:
    print(text, file=sys.stderr)
  elif (
    workdir
    and not isinstance(error, (KeyboardInterrupt, *BAD_INPUT))
    and type(error).__name__ != 'ConfigError'
  ):
    path = log_path(workdir)
    if _append(path, text):
      if not isinstance(error, ONE_LINE_ERRORS) and not _is_one_line(error):
        line += f' (traceback in {path})'
  print(line, file=sys.stderr, flush=True)
  logging.flush()
  sys.stdout.flush()
  code = INTERRUPTED_EXIT_CODE if isinstance(error, KeyboardInterrupt) else 1
  os._exit(code)  # pylint: disable=protected-access
