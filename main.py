r"""Trains or evaluates FCN.

  python main.py --config=configs/gopro.py --workdir=runs/gopro
  python main.py --config=configs/gopro.py --workdir=runs/gopro --mode=eval
  python main.py --config=configs/tiny.py --workdir=/tmp/tiny --config.batch_size=8

Re-running the same command resumes from the latest checkpoint of --workdir.
Several processes (one per host, or one per GPU) form one job: on a TPU VM pod
slice, under SLURM or Open MPI with --multihost (or auto-detected), elsewhere
with --coordinator_address, --num_processes and --process_id on every process.
This file only reads the flags: the job is joined by `fcn_jax.distributed`,
training is `fcn_jax.train`, evaluation `fcn_jax.evaluators`.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from fcn_jax import distributed

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
flags.DEFINE_bool(
  'verbose',
  False,
  'Print the traceback of an error that ends the run on the terminal '
  '(default: WORKDIR/error.log, the terminal gets one line).',
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  distributed.initialize(
    distributed.Launch(
      multihost=FLAGS.multihost,
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
      heartbeat_timeout=FLAGS.heartbeat_timeout,
    )
  )
  # Keep Orbax's per-file chatter out of the log; absl INFO stays for progress.
  logging.get_absl_logger().addFilter(
    lambda record: f'{os.sep}orbax{os.sep}' not in record.pathname
  )
  field = 'batch_size' if FLAGS.mode == 'train' else 'eval_batch_size'
  distributed.log_start(field, FLAGS.config[field])
  # pylint: disable=g-import-not-at-top
  from fcn_jax import evaluators
  from fcn_jax import interrupts
  from fcn_jax import tooling
  from fcn_jax import train

  # pylint: enable=g-import-not-at-top
  if not FLAGS.verbose:
    interrupts.capture_background_errors(FLAGS.workdir)
  if FLAGS.profile_steps:
    try:
      tooling.parse_steps(FLAGS.profile_steps)
    except ValueError as e:
      raise SystemExit(f'error: {e}') from None
  tooling.enable_compilation_cache(FLAGS.workdir)
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(
        FLAGS.config, FLAGS.workdir, profile_steps=FLAGS.profile_steps
      )
    else:
      evaluators.evaluate(FLAGS.config, FLAGS.workdir)
  except Exception as e:  # pylint: disable=broad-except
    interrupts.exit_with_error(e, FLAGS.workdir, verbose=FLAGS.verbose)
  except KeyboardInterrupt as e:  # Ctrl-C before training set its handler
    interrupts.exit_with_error(e, FLAGS.workdir, verbose=FLAGS.verbose)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
