"""Compilation cache and profiler traces for training runs.

`enable_compilation_cache(workdir)`: JAX's persistent compilation cache in
`<workdir>/compilation_cache` unless --jax_compilation_cache_dir names another
(main.py reads JAX's own flags), so a resumed run loads its executables
instead of compiling them again. `StepProfiler`: a jax.profiler trace of the
steps --profile_steps=a:b, written under `<workdir>/plugins/profile/`, where
TensorBoard's profile plugin finds it.
"""

from __future__ import annotations

from typing import Any, Optional

from absl import logging
from etils import epath
import jax


def enable_compilation_cache(workdir: str) -> str:
  """Sets JAX's persistent compilation cache directory (if unset); returns it."""
  if not jax.config.jax_compilation_cache_dir:
    path = str(epath.Path(workdir) / 'compilation_cache')
    jax.config.update('jax_compilation_cache_dir', path)
  return jax.config.jax_compilation_cache_dir


def parse_steps(text: str) -> tuple[int, int]:
  """'a:b' -> (a, b): steps a to b inclusive, 1 <= a <= b."""
  try:
    first, last = (int(v) for v in text.split(':'))
  except ValueError:
    raise ValueError(
      f'--profile_steps={text}: expected a:b, e.g. 10:12 (steps 10 to 12)'
    ) from None
  if not 1 <= first <= last:
    raise ValueError(f'--profile_steps={text}: need 1 <= a <= b')
  return first, last


class StepProfiler:
  """Traces steps first..last: call it after every step with that step's outputs."""

  def __init__(self, workdir: str, steps: Optional[str], start_step: int = 0):
    self.logdir = str(workdir)
    self.steps = parse_steps(steps) if steps else None
    self.active = False
    if self.steps and self.steps[0] == start_step + 1:
      self._start()

  def _start(self) -> None:
    jax.profiler.start_trace(self.logdir)
    self.active = True
    logging.info('Profiling steps %d to %d', *self.steps)

  def __call__(self, step: int, outputs: Any) -> None:
    if not self.steps:
      return
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(outputs)  # the traced steps' device work included
      self.close()
      logging.info('Profile of steps %d to %d in %s', *self.steps, self.logdir)
    elif not self.active and step + 1 == self.steps[0]:
      self._start()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
