"""Several processes, one job: two local processes of one CPU device each (gloo
collectives) run main.py with the tiny config: end to end against one process
with two devices, SIGTERM to one of them, kill -9 of one of them, and a missing
dataset that only process 0 builds.

The jobs share a persistent compilation cache: after the first job, process 0
loads its programs from it (process 1 compiles: on the CPU its cache keys
differ from process 0's, and JAX writes the cache from process 0 only).
"""

import glob
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.test_train import final_params

pytestmark = pytest.mark.multihost
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT = 10  # --heartbeat_timeout of these jobs (s)
JOB_TIMEOUT = 600  # bound on any one job (s)
TEST_DATASET = 'synthetic_blur_tiny_test'
# The interrupted job: 1000 steps, so that it cannot end before the signal
# lands, a log line per step, no evaluation. It finishes with the reference's
# 12 steps: the learning rate schedule ('step') and the input stream do not
# depend on num_train_steps, nor the parameters on evaluations, so it must end
# with the reference's parameters.
LONG = (
  '--config.num_train_steps=1000',
  '--config.log_every_steps=1',
  "--config.eval_datasets=()",
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class Job:
  """main.py as `num_processes` local processes of `devices` CPU devices."""

  def __init__(
    self,
    workdir,
    data_dir,
    *args,
    num_processes=2,
    devices=1,
    cache=None,
    name='job',
  ):
    self.logs = [
      os.path.join(str(workdir) + '.logs', f'{name}.{i}.log')
      for i in range(num_processes)
    ]
    os.makedirs(os.path.dirname(self.logs[0]), exist_ok=True)
    env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    )
    if cache:
      env['JAX_COMPILATION_CACHE_DIR'] = str(cache)
    launch = []
    if num_processes > 1:
      launch = [
        f'--coordinator_address=localhost:{_free_port()}',
        f'--num_processes={num_processes}',
        f'--heartbeat_timeout={HEARTBEAT}',
      ]
    self.procs = []
    for i in range(num_processes):
      with open(self.logs[i], 'w') as log:
        self.procs.append(
          subprocess.Popen(
            [
              sys.executable,
              'main.py',
              '--config=configs/tiny.py',
              f'--workdir={workdir}',
              f'--config.data_dir={data_dir}',
              *launch,
              *([f'--process_id={i}'] if launch else []),
              *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
          )
        )

  def out(self, i: int) -> str:
    with open(self.logs[i]) as f:
      return f.read()

  def tails(self) -> str:
    return '\n'.join(
      f'--- process {i}:\n{self.out(i)[-2500:]}' for i in range(len(self.procs))
    )

  def wait_for(
    self, condition, what: str, timeout: float = JOB_TIMEOUT
  ) -> None:
    deadline = time.time() + timeout
    while not condition():
      ended = any(p.poll() is not None for p in self.procs)
      if ended or time.time() > deadline:
        self.kill()
        pytest.fail(f'waiting for {what}:\n{self.tails()}')
      time.sleep(0.1)

  def wait(self, timeout: float = JOB_TIMEOUT) -> list[int]:
    """The exit codes, once every process ended (killed after `timeout`)."""
    deadline = time.time() + timeout
    for p in self.procs:
      try:
        p.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        self.kill()
        pytest.fail(f'the job ran past {timeout} s:\n{self.tails()}')
    return [p.returncode for p in self.procs]

  def finish(self) -> None:
    codes = self.wait()
    assert codes == [0] * len(codes), self.tails()

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _steps(workdir, kind='checkpoints') -> list[int]:
  """The complete checkpoints (Orbax renames a step's folder when done)."""
  folder = os.path.join(str(workdir), kind)
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _assert_same_params(a, b, **tolerance):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    if tolerance:
      np.testing.assert_allclose(x, y, **tolerance)
    else:
      np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module', autouse=True)
def no_core_dumps():
  """The survivors of a dead process abort: no core files from the jobs."""
  soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
  resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
  yield
  resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='module')
def two(tmp_path_factory, cache):
  """The uninterrupted reference: two processes, on an empty data_dir."""
  root = tmp_path_factory.mktemp('two')
  job = Job(root / 'work', root / 'data', cache=cache)
  job.finish()
  return root / 'work', root / 'data', job


@pytest.fixture(scope='module')
def one(two, tmp_path_factory, cache):
  """The same config in one process with two devices."""
  workdir = tmp_path_factory.mktemp('one') / 'work'
  Job(workdir, two[1], num_processes=1, devices=2, cache=cache).finish()
  return workdir


def test_two_processes_train_like_one_with_two_devices(two, one):
  workdir, _, job = two
  for i in (0, 1):
    starts = re.findall(r'\] (cpu: .*)', job.out(i))
    assert starts == [
      f'cpu: 2 x cpu (1 per process), process {i} of 2; '
      'batch_size 4 global, 2 per device'
    ], starts
  params, step = final_params(workdir)
  reference, _ = final_params(one)
  assert step == 12
  _assert_same_params(params, reference, rtol=1e-4, atol=1e-6)
  # Written once, by process 0 (checkpoints: collectively).
  assert sorted(os.listdir(workdir / 'checkpoints'), key=int) == ['8', '12']
  assert len(os.listdir(workdir / 'best')) == 1
  assert len(glob.glob(str(workdir / 'events.out.tfevents.*'))) == 1
  folder = workdir / 'eval' / TEST_DATASET
  assert sorted(os.listdir(folder)) == [
    'grid.png',
    'per_image.csv',
    'summary.json',
  ]
  summary = json.loads((folder / 'summary.json').read_text())
  single = json.loads(
    (one / 'eval' / TEST_DATASET / 'summary.json').read_text()
  )
  assert summary.keys() == single.keys() and summary['num_images'] == 6
  for k, v in single.items():
    expected = v if isinstance(v, str) else pytest.approx(v, abs=1e-4)
    assert summary[k] == expected, k


def test_missing_dataset_is_built_once_by_process_0(two):
  _, data_dir, job = two
  assert 'Generating dataset synthetic_blur' in job.out(0)
  assert 'Generating dataset' not in job.out(1)
  assert os.listdir(data_dir / 'synthetic_blur' / 'tiny') == ['1.1.0']
  for i in (0, 1):
    assert 'Training from step 0 to 12' in job.out(i)
    assert re.search(r'synthetic_blur/tiny:test restored +6 ', job.out(i))


@pytest.fixture(scope='module')
def preempted(two, tmp_path_factory, cache):
  """A long run, SIGTERM to process 1 only after its first logged step."""
  workdir = tmp_path_factory.mktemp('preempted') / 'work'
  job = Job(workdir, two[1], *LONG, cache=cache, name='sigterm')
  job.wait_for(lambda: '[1] train_' in job.out(1), 'step 1')
  job.procs[1].send_signal(signal.SIGTERM)
  codes = job.wait(timeout=300)  # a save and an exit
  return workdir, job, codes


def test_sigterm_to_one_process_saves_one_step_everywhere(preempted):
  workdir, job, codes = preempted
  assert codes == [0, 0], job.tails()
  saved = [re.findall(r'SIGTERM: saved step (\d+)', job.out(i)) for i in (0, 1)]
  assert saved[0] == saved[1] and len(saved[0]) == 1, job.tails()
  step = int(saved[0][0])
  assert _steps(workdir)[-1] == step and 1 < step < 8


@pytest.fixture(scope='module')
def killed(preempted, two, cache):
  """The preempted run re-run as it was, then process 1 killed (-9) once it
  saved a step after the one it resumed from."""
  workdir, _, _ = preempted
  resumed_from = _steps(workdir)[-1]
  job = Job(workdir, two[1], *LONG, cache=cache, name='killed')
  job.wait_for(
    lambda: max(_steps(workdir), default=0) > resumed_from, 'a new checkpoint'
  )
  job.procs[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  survivor = job.wait(timeout=HEARTBEAT + 120)[0]
  return workdir, job, resumed_from, survivor, time.time() - killed_at


def test_rerun_after_sigterm_resumes_on_every_process(killed):
  workdir, job, resumed_from, _, _ = killed
  for i in (0, 1):
    assert re.search(rf'Resumed from \S+ at step {resumed_from}\b', job.out(i))


def test_kill_9_of_one_process_ends_the_other(killed):
  _, job, _, survivor, seconds = killed
  assert survivor != 0
  # Either the coordination service notices the missing heartbeats, or a
  # collective with the dead peer fails first (gloo: connection reset).
  assert any(
    sign in job.out(0)
    for sign in (
      'JAX distributed service detected fatal errors',
      'Connection reset by peer',
    )
  ), job.tails()
  # Detected within the heartbeat timeout; the margin is for a loaded machine.
  assert seconds < HEARTBEAT + 60, seconds


@pytest.fixture(scope='module')
def resumed(killed, two, cache):
  """The killed run restarted with the reference's 12 steps, after planting an
  incomplete checkpoint (what a save cut short leaves) newer than any other."""
  workdir = killed[0]
  complete = _steps(workdir)[-1]
  planted = workdir / 'checkpoints' / '11.orbax-checkpoint-tmp-1234567890'
  shutil.copytree(workdir / 'checkpoints' / str(complete), planted)
  job = Job(
    workdir, two[1], "--config.eval_datasets=()", cache=cache, name='resumed'
  )
  job.finish()
  return workdir, job, complete, planted


def test_restart_resumes_from_the_last_complete_checkpoint(resumed, two):
  workdir, job, complete, planted = resumed
  assert complete < 11
  for i in (0, 1):
    assert re.search(rf'Resumed from \S+ at step {complete}\b', job.out(i))
  assert not planted.exists()  # cleaned up, never restored
  params, step = final_params(workdir)
  reference, _ = final_params(two[0])
  assert step == 12
  _assert_same_params(params, reference)


@pytest.mark.parametrize(
  'args, message',
  [
    (
      ('--process_id=1',),
      '--process_id needs --coordinator_address, --num_processes too',
    ),
    (
      (
        '--coordinator_address=localhost:1',
        '--num_processes=2',
        '--process_id=2',
      ),
      '--process_id=2 must be in 0 .. 1',
    ),
    (
      (
        '--coordinator_address=localhost',
        '--num_processes=2',
        '--process_id=0',
      ),
      '--coordinator_address=localhost: expected host:port',
    ),
    (('--heartbeat_timeout=0',), '--heartbeat_timeout=0 must be at least 1'),
  ],
)
def test_bad_launch_flags_are_one_line(tmp_path, args, message):
  proc = subprocess.run(
    [
      sys.executable,
      'main.py',
      '--config=configs/tiny.py',
      f'--workdir={tmp_path}/w',
      *args,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith(f'error: {message}')
  assert not os.path.exists(tmp_path / 'w')


def test_config_error_ends_every_process_with_one_line(tmp_path):
  job = Job(
    tmp_path / 'work', tmp_path / 'data', '--config.crop_size=30', name='bad'
  )
  assert all(code != 0 for code in job.wait(timeout=300)), job.tails()
  assert job.out(0).strip().splitlines()[-1] == (
    'error: config.crop_size=30 must be a positive multiple of 8'
  )
  assert not os.path.exists(tmp_path / 'work' / 'checkpoints')
