r"""Trains or evaluates FCN.

  python main.py --config=configs/gopro.py --workdir=runs/gopro
  python main.py --config=configs/gopro.py --workdir=runs/gopro --mode=eval
  python main.py --config=configs/tiny.py --workdir=/tmp/tiny --config.batch_size=8

Re-running the same command resumes from the latest checkpoint of --workdir.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                  'train (then evaluate), or only evaluate the best checkpoint.')
flags.DEFINE_bool('multihost', None, 'Call jax.distributed.initialize() (default: '
                  'when a coordinator or a TPU pod is configured in the environment).')
config_flags.DEFINE_config_file('config', None, 'A file in configs/.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _is_multihost() -> bool:
  if FLAGS.multihost is not None:
    return FLAGS.multihost
  return ('JAX_COORDINATOR_ADDRESS' in os.environ
          or ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
          or int(os.environ.get('SLURM_NTASKS', '1')) > 1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if _is_multihost():
    jax.distributed.initialize()
  # Keep Orbax's per-file chatter out of the log; absl INFO stays for progress.
  logging.get_absl_logger().addFilter(
      lambda record: f'{os.sep}orbax{os.sep}' not in record.pathname)
  logging.info('JAX process %d / %d, %d local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.devices())
  from fcn_jax import train  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.evaluate(FLAGS.config, FLAGS.workdir)
  except (train.ConfigError, train.NonFiniteLossError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
