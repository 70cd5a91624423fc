"""Faults a long run meets: an unreadable checkpoint, a full disk, Ctrl-C, and
errors that end a run in one line (main.py on the tiny config, CPU).

The runs train 24 steps with a checkpoint every 4 and no evaluation: the
learning rate schedule ('step') and the input stream do not depend on
num_train_steps, so every run that ends at step 24 must end with the
parameters of the uninterrupted one.
"""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fcn_jax import checkpoint
from fcn_jax import interrupts
from tests.test_train import final_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600  # bound on any one run (s)
RUN = (
  '--config.num_train_steps=24',
  '--config.checkpoint_every_steps=4',
  '--config.checkpoint_keep_every=8',
  '--config.log_every_steps=100',
  '--config.eval_datasets=()',
)
LONG = ('--config.num_train_steps=1000', '--config.checkpoint_every_steps=2')
HANDFUL = 5


# Runs the rest of its command line as `python ARGS` with SIGINT at its default
# (what a preexec_fn would do, without forking a threaded pytest).
_SIGINT_DEFAULT = (
  'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); '
  'os.execv(sys.executable, [sys.executable, *sys.argv[1:]])'
)


def start(workdir, data_dir, *args, extra_flags=(), log=None, env=None):
  """main.py in a child with SIGINT at its default (a child of a background
  shell would otherwise ignore it), its output to `log` (WORKDIR.out)."""
  log = open(log or f'{workdir}.out', 'w')  # pylint: disable=consider-using-with
  return subprocess.Popen(
    [
      sys.executable,
      '-c',
      _SIGINT_DEFAULT,
      'main.py',
      '--config=configs/tiny.py',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      *args,
      *extra_flags,
    ],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', **(env or {})),
    stdout=log,
    stderr=subprocess.STDOUT,
  )


def output(workdir) -> str:
  with open(f'{workdir}.out') as f:
    return f.read()


def run(workdir, data_dir, *args, env=None) -> tuple[int, str]:
  proc = start(workdir, data_dir, *args, env=env)
  try:
    proc.wait(timeout=TIMEOUT)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode, output(workdir)


def fault_lines(out: str) -> list[str]:
  """The lines of `out` that are not the run's INFO log (nor the lines of a
  multi-line INFO record, nor TensorFlow's start-up banner)."""
  lines, in_info = [], False
  for line in out.splitlines():
    if re.match(r'[IWEF]\d{4} ', line):
      in_info = line.startswith('I')
      if not in_info and 'oneDNN' not in line:
        lines.append(line)
    elif 'absl::InitializeLog' in line:
      continue
    elif not in_info or line.startswith(('Traceback', 'error:', 'SIGINT')):
      in_info = False
      lines.append(line)
  return lines


def assert_few_lines(out: str) -> None:
  assert 'Traceback' not in out and 'Event loop is closed' not in out, out[
    -3000:
  ]
  lines = fault_lines(out)
  assert len(lines) <= HANDFUL, '\n'.join(lines)[-3000:]


def corrupt(step_dir) -> None:
  """Flips bytes in the data files of a step's parameters."""
  files = glob.glob(
    os.path.join(step_dir, 'params', 'ocdbt.process_0', 'd', '*')
  )
  assert files
  for path in files:
    with open(path, 'r+b') as f:
      data = bytearray(f.read())
      data[::7] = bytes(b ^ 0xFF for b in data[::7])
      f.seek(0)
      f.write(data)


def steps(workdir) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


def assert_same(ours, theirs) -> None:
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tiny_data')


@pytest.fixture(scope='module')
def base(data_dir, tmp_path_factory):
  """The uninterrupted run: (workdir, its output, its step-24 parameters)."""
  workdir = tmp_path_factory.mktemp('base') / 'work'
  code, out = run(workdir, data_dir, *RUN)
  assert code == 0, out[-3000:]
  params, step = final_params(workdir)
  assert step == 24
  return workdir, out, params


@pytest.mark.slow
def test_keep_policy_and_the_size_of_one_checkpoint(base):
  workdir, out, _ = base
  # The latest 2 (20, 24) and every multiple of keep_every=8 (8, 16).
  assert steps(workdir) == ['16', '20', '24', '8']
  size = re.search(r'Checkpoints: one is about ([\d.]+) MB', out)
  assert size, out[-3000:]
  on_disk = sum(
    os.path.getsize(p)
    for p in glob.glob(
      str(workdir / 'checkpoints' / '24' / '**'), recursive=True
    )
    if os.path.isfile(p)
  )
  assert 0.8 < float(size.group(1)) * 1e6 / on_disk < 1.25


@pytest.mark.slow
def test_unreadable_latest_step_is_moved_aside_and_the_previous_restored(
  base, data_dir, tmp_path
):
  workdir = tmp_path / 'work'
  shutil.copytree(base[0], workdir)
  corrupt(workdir / 'checkpoints' / '24')
  code, out = run(workdir, data_dir, *RUN)
  assert code == 0, out[-3000:]
  warnings = [line for line in out.splitlines() if 'cannot be read' in line]
  assert (
    len(warnings) == 1 and 'Checkpoint step 24 cannot be read' in (warnings[0])
  ), out[-3000:]
  assert re.search(r'Resumed from \S+ at step 20\b', out)
  assert '24.unreadable' in steps(workdir)
  ours, step = final_params(workdir)
  assert step == 24
  assert_same(ours, base[2])
  assert_few_lines(out)


def test_every_step_unreadable_ends_in_one_line_and_deletes_nothing(
  base, data_dir, tmp_path
):
  workdir = tmp_path / 'work'
  shutil.copytree(base[0], workdir)
  for step in ('8', '16', '20', '24'):
    corrupt(workdir / 'checkpoints' / step)
  code, out = run(workdir, data_dir, *RUN)
  assert code == 1, out[-3000:]
  last = out.strip().splitlines()[-1]
  assert last.startswith('error: no checkpoint of '), last
  for step in ('24', '20', '16', '8'):
    assert f'step {step}: ' in last, last
  assert steps(workdir) == ['16', '20', '24', '8']  # nothing moved or deleted
  assert_few_lines(out)


def _mount_tmpfs(path, size: str) -> bool:
  os.makedirs(path)
  if os.geteuid() != 0 or not shutil.which('mount'):
    return False
  proc = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
    capture_output=True,
    timeout=30,
    check=False,
  )
  return proc.returncode == 0


@pytest.mark.slow
def test_full_disk_ends_in_one_line_and_the_previous_step_restores(
  data_dir, tmp_path
):
  """On a 3 MB tmpfs where the test may mount one (root), else with the
  writer failing as a full disk does (ENOSPC) from step 8 on."""
  disk = tmp_path / 'disk'
  if not _mount_tmpfs(disk, '3m'):
    _full_disk_by_fault_injection(data_dir, tmp_path)
    return
  try:
    workdir = disk / 'work'
    # The compilation cache (by default in the workdir) goes elsewhere: the
    # 3 MB hold checkpoints only.
    cache = dict(JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))
    code, out = run(workdir, data_dir, *RUN, env=cache)
    shutil.copytree(workdir, tmp_path / 'copy')  # off the tmpfs, as it was
  finally:
    subprocess.run(['umount', str(disk)], timeout=60, check=True)
  assert code == 1, out[-3000:]
  # Each checkpoint is about 1.8 MB: step 4 fits, step 8 does not.
  assert re.search(r'Low disk space: [\d.]+ MB free', out), out[-3000:]
  last = out.strip().splitlines()[-1]
  assert last.startswith(
    f'error: saving checkpoint step 8 to {workdir}/checkpoints/8 failed: '
    'RESOURCE_EXHAUSTED: '
  ), last
  assert_few_lines(out)
  # The partial step is not a step; the previous one restores.
  mngr = checkpoint.make_manager(str(tmp_path / 'copy'), read_only=True)
  assert mngr.all_steps() == [4]
  _, step = final_params(tmp_path / 'copy')
  assert step == 4


def _full_disk_by_fault_injection(data_dir, tmp_path):
  import errno  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fcn_jax import train  # pylint: disable=g-import-not-at-top

  real = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step >= 8:
      raise OSError(
        errno.ENOSPC, 'No space left on device', str(self.directory)
      )
    return real(self, step, *args, **kwargs)

  config = tiny.get_config()
  config.update(
    data_dir=str(data_dir),
    num_train_steps=12,
    checkpoint_every_steps=4,
    eval_datasets=(),
  )
  workdir = tmp_path / 'work'
  pytest.MonkeyPatch().context()
  with pytest.MonkeyPatch().context() as patch:
    patch.setattr(ocp.CheckpointManager, 'save', save)
    with pytest.raises(checkpoint.CheckpointSaveError) as e:
      train.train_and_evaluate(config, str(workdir))
  assert e.value.step == 8
  assert str(e.value).startswith(
    f'saving checkpoint step 8 to {workdir}/checkpoints/8 failed: '
    '[Errno 28] No space left on device'
  )
  assert '\n' not in str(e.value)
  _, step = final_params(workdir)
  assert step == 4


def _wait_for(proc, condition, what, timeout=TIMEOUT):
  deadline = time.time() + timeout
  while not condition():
    if proc.poll() is not None or time.time() > deadline:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      pytest.fail(f'no {what}')
    time.sleep(0.1)


@pytest.mark.slow
def test_sigint_saves_and_exits_and_the_restart_is_bit_exact(
  base, data_dir, tmp_path
):
  workdir = tmp_path / 'work'
  proc = start(workdir, data_dir, *RUN, *LONG)
  _wait_for(
    proc,
    lambda: os.path.exists(
      workdir / 'checkpoints' / '2' / 'commit_success.txt'
    ),
    'checkpoint at step 2',
  )
  proc.send_signal(signal.SIGINT)
  try:
    code = proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  out = output(workdir)
  assert code == 0, out[-3000:]
  saved = re.findall(r'SIGINT: saved step (\d+); exiting', out)
  assert len(saved) == 1, out[-3000:]
  step = int(saved[0])
  assert 2 <= step < 24, step  # a longer run could not check the resume
  assert checkpoint.make_manager(
    str(workdir), read_only=True
  ).latest_step() == (step)
  assert_few_lines(out)
  code, out = run(workdir, data_dir, *RUN)
  assert code == 0, out[-3000:]
  assert re.search(rf'Resumed from \S+ at step {step}\b', out)
  ours, last = final_params(workdir)
  assert last == 24
  assert_same(ours, base[2])


@pytest.mark.slow
def test_second_sigint_aborts_at_once(data_dir, tmp_path):
  workdir = tmp_path / 'work'
  proc = start(workdir, data_dir, *RUN, *LONG)
  _wait_for(
    proc,
    lambda: os.path.exists(
      workdir / 'checkpoints' / '2' / 'commit_success.txt'
    ),
    'checkpoint at step 2',
  )
  proc.send_signal(signal.SIGINT)
  _wait_for(proc, lambda: 'Ctrl-C again aborts' in output(workdir), 'notice')
  proc.send_signal(signal.SIGINT)
  sent = time.time()
  try:
    code = proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert time.time() - sent < 5
  out = output(workdir)
  assert code == interrupts.INTERRUPTED_EXIT_CODE, out[-3000:]
  assert 'SIGINT again: aborting' in out
  assert_few_lines(out)
  # What was complete stays restorable.
  assert (
    checkpoint.make_manager(str(workdir), read_only=True).latest_step() >= 2
  )


def test_unexpected_error_is_one_line_and_the_traceback_goes_to_the_log(
  data_dir, tmp_path
):
  workdir = tmp_path / 'work'
  (tmp_path / 'cache').write_text('')  # a file where a folder goes
  code, out = run(
    workdir, data_dir, *RUN, f'--config.decoded_cache_dir={tmp_path}/cache'
  )
  assert code == 1, out[-3000:]
  last = out.strip().splitlines()[-1]
  assert last.startswith('error: ') and last.endswith(
    f'(traceback in {workdir}/error.log)'
  ), last
  assert_few_lines(out)
  with open(workdir / 'error.log') as f:
    assert 'Traceback (most recent call last)' in f.read()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_sigint_to_one_process_of_a_job_saves_one_step_everywhere(
  data_dir, tmp_path
):
  """SIGINT goes through the preemption sync point, as SIGTERM does."""
  workdir = tmp_path / 'work'
  port = _free_port()
  logs = [tmp_path / f'process{i}.out' for i in range(2)]
  procs = [
    start(
      workdir,
      data_dir,
      *RUN,
      *LONG,
      extra_flags=(
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
        '--heartbeat_timeout=10',
        '--config.log_every_steps=1',
      ),
      log=logs[i],
    )
    for i in range(2)
  ]

  def out(i):
    return logs[i].read_text()

  try:
    _wait_for(procs[1], lambda: '[1] train_' in out(1), 'step 1')
    procs[1].send_signal(signal.SIGINT)
    deadline = time.time() + 300
    codes = [p.wait(timeout=max(1, deadline - time.time())) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  tails = '\n'.join(out(i)[-2000:] for i in range(2))
  assert codes == [0, 0], tails
  saved = [re.findall(r'SIG\w+: saved step (\d+)', out(i)) for i in range(2)]
  assert saved[0] == saved[1] and len(saved[0]) == 1, tails
  assert f'SIGINT: saved step {saved[0][0]}; exiting' in out(1)
  assert checkpoint.make_manager(str(workdir), read_only=True).all_steps()[
    -1
  ] == int(saved[0][0])


def test_cause_line_picks_the_status_line_of_a_wrapped_error():
  try:
    try:
      raise ValueError(
        'Traceback (most recent call last):\n  File "x.py"\n'
        'RESOURCE_EXHAUSTED: Error writing local file "/w/8/x": No space'
      )
    except ValueError as e:
      raise RuntimeError('Encountered error while saving: see details') from e
  except RuntimeError as e:
    line = checkpoint.cause_line(e)
  assert (
    line == 'RESOURCE_EXHAUSTED: Error writing local file "/w/8/x": No space'
  )
  assert checkpoint.cause_line(KeyError('k')) == "KeyError: 'k'"


class _Manager:
  """What restore_latest_readable uses of a CheckpointManager."""

  def __init__(self, directory, steps):
    self.directory = directory
    directory.mkdir(parents=True, exist_ok=True)
    for step in steps:
      (directory / str(step)).mkdir(parents=True)

  def all_steps(self):
    return [int(p.name) for p in self.directory.iterdir() if p.name.isdigit()]

  def reload(self):
    pass


def test_restore_latest_readable_tries_newest_first(tmp_path):
  from etils import epath  # pylint: disable=g-import-not-at-top

  mngr = _Manager(epath.Path(tmp_path), [3, 6, 9])
  tried = []

  def restore(step):
    tried.append(step)
    if step > 3:
      raise ValueError(f'DATA_LOSS: step {step} is corrupt\nmore')
    return 'state'

  assert checkpoint.restore_latest_readable(mngr, restore) == (3, 'state')
  assert tried == [9, 6, 3]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
    '3',
    '6.unreadable',
    '9.unreadable',
  ]
  with pytest.raises(checkpoint.CheckpointUnreadableError) as e:
    checkpoint.restore_latest_readable(
      _Manager(epath.Path(tmp_path / 'b'), [1, 2]), lambda s: restore(s + 3)
    )
  assert str(e.value) == (
    f'no checkpoint of {tmp_path}/b can be read: step 2: DATA_LOSS: step 5 is '
    'corrupt; step 1: DATA_LOSS: step 4 is corrupt'
  )
  assert sorted(p.name for p in (tmp_path / 'b').iterdir()) == ['1', '2']
  assert (
    checkpoint.restore_latest_readable(
      _Manager(epath.Path(tmp_path / 'c'), []), restore
    )
    is None
  )


def test_readers_name_an_unreadable_checkpoint_in_one_line(base, tmp_path):
  import fcn_jax  # pylint: disable=g-import-not-at-top
  from fcn_jax import image_io  # pylint: disable=g-import-not-at-top
  from fcn_jax import predict  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / 'work'
  shutil.copytree(base[0], workdir)
  corrupt(workdir / 'checkpoints' / '24')
  expected = f'checkpoint {workdir}/checkpoints/24 cannot be read: '
  with pytest.raises(checkpoint.CheckpointUnreadableError) as e:
    fcn_jax.load(str(workdir))
  assert str(e.value).startswith(expected) and '\n' not in str(e.value)
  assert e.value.__cause__ is None and e.value.__suppress_context__
  image_io.write_png(str(tmp_path / 'in.png'), np.zeros((16, 16, 3), np.uint8))
  with pytest.raises(predict.PredictError, match='^' + re.escape(expected)):
    predict.run(str(workdir), str(tmp_path / 'in.png'), str(tmp_path / 'o.png'))
  assert not os.path.exists(tmp_path / 'o.png')
