r"""Trains or evaluates FCN.

  python main.py --config=configs/gopro.py --workdir=runs/gopro
  python main.py --config=configs/gopro.py --workdir=runs/gopro --mode=eval
  python main.py --config=configs/tiny.py --workdir=/tmp/tiny --config.batch_size=8

Re-running the same command resumes from the latest checkpoint of --workdir.
Several processes (one per host, or one per GPU) form one job: on a TPU VM pod
slice, under SLURM or Open MPI with --multihost (or auto-detected), elsewhere
with --coordinator_address, --num_processes and --process_id on every process.
"""

import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
  'workdir', None, 'Directory for checkpoints, logs and results.'
)
flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'eval'],
  'train (then evaluate), or only evaluate the best checkpoint.',
)
flags.DEFINE_bool(
  'multihost',
  None,
  'Call jax.distributed.initialize() (default: '
  'when a coordinator, SLURM job, Open MPI job or TPU pod is '
  'configured in the environment).',
)
flags.DEFINE_string(
  'coordinator_address',
  None,
  'host:port of process 0, the same on every process (with '
  '--num_processes and --process_id; no auto-detection).',
)
flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes-1.')
flags.DEFINE_integer(
  'heartbeat_timeout',
  100,
  'Seconds after which a process that stopped answering '
  '(killed, lost) counts as dead and every other one stops '
  'with an error.',
)
flags.DEFINE_string(
  'profile_steps',
  None,
  'a:b: write a jax.profiler trace of steps a to b into the workdir '
  '(TensorBoard profile plugin).',
)
config_flags.DEFINE_config_file(
  'config', None, 'A file in configs/.', lock_config=True
)
flags.mark_flags_as_required(['config', 'workdir'])

_EXPLICIT = ('coordinator_address', 'num_processes', 'process_id')


def _is_multihost() -> bool:
  if FLAGS.multihost is not None:
    return FLAGS.multihost
  return (
    'JAX_COORDINATOR_ADDRESS' in os.environ
    or ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
    or int(os.environ.get('SLURM_NTASKS', '1')) > 1
    or int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
  )


def _launch_error() -> str | None:
  """What is wrong with the launch flags, in one line (None: nothing)."""
  given = [f for f in _EXPLICIT if FLAGS[f].value is not None]
  if given and len(given) < len(_EXPLICIT):
    missing = ', '.join(f'--{f}' for f in _EXPLICIT if f not in given)
    return (
      f'{", ".join(f"--{f}" for f in given)} needs {missing} too (give '
      'all three, or none to auto-detect the cluster)'
    )
  if given and FLAGS.multihost is False:
    return '--nomultihost contradicts --coordinator_address'
  if given:
    host, _, port = FLAGS.coordinator_address.rpartition(':')
    if not host or not port.isdigit():
      return (
        f'--coordinator_address={FLAGS.coordinator_address}: expected host:port'
      )
    if FLAGS.num_processes < 1:
      return f'--num_processes={FLAGS.num_processes} must be at least 1'
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      return (
        f'--process_id={FLAGS.process_id} must be in 0 .. '
        f'{FLAGS.num_processes - 1} '
        f'(--num_processes={FLAGS.num_processes})'
      )
  if FLAGS.heartbeat_timeout < 1:
    return f'--heartbeat_timeout={FLAGS.heartbeat_timeout} must be at least 1'
  return None


def _initialize_distributed() -> None:
  """Joins the job of several processes, if this run is one."""
  explicit = FLAGS.coordinator_address is not None
  if not explicit and not _is_multihost():
    return
  if 'cpu' in (jax.config.jax_platforms or '').split(','):
    # Cross-process collectives on the CPU (jax 0.10.2's default, explicit).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = dict(heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
  if explicit:
    kwargs.update(
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
      cluster_detection_method='deactivate',
    )
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:  # Nothing detected: no coordinator, no process count.
    sys.exit(
      f'error: --multihost: {e} No cluster (TPU VM pod slice, SLURM, '
      'Open MPI) was detected; give --coordinator_address, '
      '--num_processes and --process_id.'
    )
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(
      'error: jax.distributed.initialize failed: '
      + (str(e).strip().splitlines() or [type(e).__name__])[0]
    )


def _log_start(config) -> None:
  """One line: platform, devices, processes and the batch split."""
  field = 'batch_size' if FLAGS.mode == 'train' else 'eval_batch_size'
  batch, n = config[field], jax.device_count()
  per_device = str(batch // n) if batch % n == 0 else f'{batch}/{n}'
  logging.info(
    '%s: %d x %s (%d per process), process %d of %d; '
    '%s %d global, %s per device',
    jax.default_backend(),
    n,
    jax.devices()[0].device_kind,
    jax.local_device_count(),
    jax.process_index(),
    jax.process_count(),
    field,
    batch,
    per_device,
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  error = _launch_error()
  if error:
    sys.exit(f'error: {error}')
  _initialize_distributed()
  # Keep Orbax's per-file chatter out of the log; absl INFO stays for progress.
  logging.get_absl_logger().addFilter(
    lambda record: f'{os.sep}orbax{os.sep}' not in record.pathname
  )
  _log_start(FLAGS.config)
  from fcn_jax import tooling  # pylint: disable=g-import-not-at-top
  from fcn_jax import train  # pylint: disable=g-import-not-at-top

  if FLAGS.profile_steps:
    try:
      tooling.parse_steps(FLAGS.profile_steps)
    except ValueError as e:
      sys.exit(f'error: {e}')
  tooling.enable_compilation_cache(FLAGS.workdir)

  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(
        FLAGS.config, FLAGS.workdir, profile_steps=FLAGS.profile_steps
      )
    else:
      train.evaluate(FLAGS.config, FLAGS.workdir)
  except (train.ConfigError, train.NonFiniteLossError, FileNotFoundError) as e:
    _exit(f'error: {e}')
  except Exception:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    _exit(traceback.format_exc().rstrip())


def _exit(message: str) -> None:
  """Exits with `message` and status 1.

  A process of a job of several leaves at once, without waiting for the others
  at JAX's shutdown barrier: they are waiting for it elsewhere, and stop with
  an error when its heartbeats stop (--heartbeat_timeout).
  """
  if jax.process_count() == 1:
    sys.exit(message)
  print(message, file=sys.stderr, flush=True)
  logging.flush()
  os._exit(1)  # pylint: disable=protected-access


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
