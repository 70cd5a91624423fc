"""What every process of a run sets up: the job, the device mesh, the datasets.

`initialize` joins a job of several processes (one per host, or one per GPU)
when the launch flags or the environment say this run is one; `make_mesh` and
its two shardings place the state and the batches on every device of every
host; `prepare_datasets` builds missing synthetic datasets once (process 0)
and checks every dataset on every process.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from typing import Optional, Sequence

from absl import logging
from etils import epath
import jax

from fcn_jax.errors import ConfigError

_EXPLICIT = ('coordinator_address', 'num_processes', 'process_id')


@dataclasses.dataclass(frozen=True)
class Launch:
  """The launch flags of main.py (see its --help)."""

  multihost: Optional[bool] = None
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  heartbeat_timeout: int = 100

  def is_multihost(self) -> bool:
    """--multihost, else whether the environment describes a job of several."""
    if self.multihost is not None:
      return self.multihost
    return (
      'JAX_COORDINATOR_ADDRESS' in os.environ
      or ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
      or int(os.environ.get('SLURM_NTASKS', '1')) > 1
      or int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
    )

  def error(self) -> Optional[str]:
    """What is wrong with the launch flags, in one line (None: nothing)."""
    given = [f for f in _EXPLICIT if getattr(self, f) is not None]
    if given and len(given) < len(_EXPLICIT):
      missing = ', '.join(f'--{f}' for f in _EXPLICIT if f not in given)
      return (
        f'{", ".join(f"--{f}" for f in given)} needs {missing} too (give '
        'all three, or none to auto-detect the cluster)'
      )
    if given and self.multihost is False:
      return '--nomultihost contradicts --coordinator_address'
    if given:
      host, _, port = self.coordinator_address.rpartition(':')
      if not host or not port.isdigit():
        return f'--coordinator_address={self.coordinator_address}: expected host:port'
      if self.num_processes < 1:
        return f'--num_processes={self.num_processes} must be at least 1'
      if not 0 <= self.process_id < self.num_processes:
        return (
          f'--process_id={self.process_id} must be in 0 .. '
          f'{self.num_processes - 1} '
          f'(--num_processes={self.num_processes})'
        )
    if self.heartbeat_timeout < 1:
      return f'--heartbeat_timeout={self.heartbeat_timeout} must be at least 1'
    return None


def initialize(launch: Launch) -> None:
  """Joins the job of several processes, if this run is one.

  Exits with one line on bad launch flags or when the job cannot be joined.
  """
  error = launch.error()
  if error:
    sys.exit(f'error: {error}')
  explicit = launch.coordinator_address is not None
  if not explicit and not launch.is_multihost():
    return
  if 'cpu' in (jax.config.jax_platforms or '').split(','):
    # Cross-process collectives on the CPU (jax 0.10.2's default, explicit).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = dict(heartbeat_timeout_seconds=launch.heartbeat_timeout)
  if explicit:
    kwargs.update(
      coordinator_address=launch.coordinator_address,
      num_processes=launch.num_processes,
      process_id=launch.process_id,
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


def log_start(field: str, batch: int) -> None:
  """One line: platform, devices, processes and the split of batch `field`."""
  n = jax.device_count()
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


def exit_with(message: str) -> None:
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


# ----------------------------------------------------------------------------
# Placement: the one place the mesh and its shardings are built.


def make_mesh() -> jax.sharding.Mesh:
  """One 'data' axis over every device of every host (GSPMD-partitioned)."""
  return jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
  )


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """A whole copy on every device (parameters, optimizer state, metrics)."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """The leading (batch) axis split over the devices."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))


# ----------------------------------------------------------------------------
# Datasets.


def expand_data_dir(path: Optional[str]) -> Optional[str]:
  """config.data_dir with `~` expanded (None or '': TFDS's default)."""
  return str(epath.Path(path).expanduser()) if path else None


DATASET_BARRIER_TIMEOUT_S = 3600
_barriers = itertools.count()  # a new barrier name per call


def prepare_datasets(specs: Sequence[str], data_dir: Optional[str]) -> None:
  """Checks the datasets `specs`; builds synthetic ones (no download needed) when missing.

  Process 0 builds; the others wait for it at a barrier of the coordination
  service (a process that dies meanwhile ends the job), then all check.

  Raises:
    ConfigError: naming a dataset that is missing and the command building it.
  """
  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp

  from fcn_jax import data  # imports TensorFlow

  # pylint: enable=g-import-not-at-top

  for spec in specs if jax.process_index() == 0 else ():
    name, _ = data.parse_dataset(spec)
    if name.split('/')[0] == 'synthetic_blur':
      data.prepare_synthetic(spec, data_dir)
  ocp.multihost.get_barrier_sync_fn()(
    key=f'fcn_jax_datasets_{next(_barriers)}',
    timeout_ms=DATASET_BARRIER_TIMEOUT_S * 1000,
  )
  for spec in specs:
    try:
      data.check_dataset(spec, data_dir)
    except ValueError as e:
      raise ConfigError(str(e)) from None
