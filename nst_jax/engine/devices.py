"""Devices, meshes and shardings, on one host or several.

A run's members (the settings of a sweep; one member without a sweep) are
split over a 1-D mesh of devices, axis 'members'. With `shard_rows` the mesh
is (1, devices) with axes ('members', 'rows'), and every image-shaped array
is split on its rows instead: XLA's partitioner exchanges the convolutions'
border rows between neighbours and sums the Gram matrices over the shards.

Across hosts (after `jax.distributed.initialize()`) every process runs the
same programs over every device; each supplies the same whole host arrays
and keeps the shards of its own devices; process 0 writes the outputs.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np

from nst_jax.errors import UserError


def member_devices(count: int, shard_rows: bool = False) -> list:
  """The devices a run of `count` members uses.

  Every device of every process after `jax.distributed.initialize()` (a
  single process sees only its own). Members are split over at most `count`
  of them; with `shard_rows` every device takes a share of each image.
  """
  devices = jax.devices()
  if shard_rows or jax.process_count() > 1:
    # Every process must take part in each program: across hosts all
    # devices are used (extra member slots repeat the last member and are
    # dropped).
    return devices
  return devices[:max(1, min(count, len(devices)))]


def frame_devices(frames: int) -> list:
  """The devices a joint video window of `frames` frames is split over: as
  many as divide the frame count evenly; across hosts every device.

  Raises:
    UserError: across hosts, a window that does not split evenly over all
      their devices.
  """
  every = jax.devices()
  if jax.process_count() > 1:  # every process takes part in each program
    if frames % len(every):
      raise UserError(f'config.video.window: {frames} frames do not split '
                      f'evenly over the {len(every)} devices of all hosts')
    return every
  count = max(k for k in range(1, len(every) + 1) if frames % k == 0)
  return every[:count]


def make_mesh(devices, shard_rows: bool) -> jax.sharding.Mesh:
  """('members',) over `devices`, or ('members', 'rows') of shape
  (1, len(devices)) with `shard_rows`, in the order given.

  Built from the device list itself, not `jax.make_mesh`, which lays
  devices out by their physical topology and on TPUs asserts a whole
  cuboid of chips: 3 members on a v4-8, or 3, 5 or 7 on a v5e-8, would
  fail. Members and rows exchange little (rows their border rows), so the
  layout does not need the topology.
  """
  devices = np.asarray(list(devices), dtype=object)
  if shard_rows:
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.sharding.Mesh(devices.reshape(1, -1), ('members', 'rows'),
                             axis_types=auto)
  return jax.sharding.Mesh(devices, ('members',))


def spatial_spec(x, shards: int, image_shape=None,
                 frames: bool = False) -> jax.sharding.PartitionSpec:
  """Member axis first; image-shaped leaves (..., H, W, C) split on H.

  With `frames` (a joint video window, images (N, H, W, 3) per member) the
  leaves with a frame axis (K, N, ...) are split on N instead, and the flat
  histories' equal blocks are whole frames.

  Covers the pixels and optimiser moments (K, H, W, 3) and content features
  (K, h, w, c); with `image_shape` (H, W, 3) also L-BFGS's flat histories
  (K, m, H * W * 3), split on their last axis: in row-major order its equal
  blocks are the same row blocks. Grams (K, c, c) and scalars per member are
  only split by member. JAX arrays are split evenly only, so a leaf whose
  rows don't divide by `shards` stays whole (inside the compiled program XLA
  pads uneven splits itself).
  """
  if frames:
    if x.ndim >= 5 and x.shape[1] % shards == 0:
      return jax.P('members', 'rows', *([None] * (x.ndim - 2)))
  elif x.ndim >= 4 and x.shape[-3] % shards == 0:
    return jax.P('members', *([None] * (x.ndim - 4)), 'rows', None, None)
  if (image_shape is not None and x.ndim == 3
      and x.shape[-1] == np.prod(image_shape) and image_shape[0] % shards == 0):
    return jax.P('members', None, 'rows')
  return jax.P('members') if x.ndim else jax.P()


def place(tree, mesh, shard_rows: bool, batched: bool = True,
          frames: bool = False):
  """Puts host arrays on `mesh`: split by member (and rows, or with
  `frames` a video window's frames), or replicated (`batched=False`). Each
  process supplies the same whole arrays and keeps only the shards of its
  own devices."""
  shards = mesh.devices.size

  def partition(x):
    if not batched:
      return jax.P()
    if shard_rows or frames:
      return spatial_spec(x, shards, frames=frames)
    return jax.P('members')

  def put(x):
    sharding = jax.NamedSharding(mesh, partition(x))
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding,
                                        lambda index: x[index])
  return jax.tree_util.tree_map(put, tree)


def stack(trees):
  """Members' pytrees -> one pytree with a leading member axis, on the host
  (NumPy: no small XLA programs to compile before the real ones)."""
  return jax.tree_util.tree_map(
      lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def pad_members(trees, count: int) -> list:
  """Repeats the last member so every device gets as many (they're dropped)."""
  return list(trees) + [trees[-1]] * (count - len(trees))


def member(tree, k):
  """Member k of a batched pytree on the host."""
  return jax.tree_util.tree_map(lambda x: x[k], tree)


def to_host(tree):
  """Whole NumPy arrays on this host, gathered from every process when the
  devices span several."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process: one Ctrl-C or SIGTERM (a spot
  VM's preemption) is seen by one process only, and a process that left
  the loop alone would leave the others waiting in a collective."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(
      np.asarray(bool(flag)))))


def same_on_every_process(text: str) -> bool:
  """Whether every process has the same `text` (compared by hash)."""
  if jax.process_count() == 1:
    return True
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  # 32 bits: JAX gathers 32-bit integers unless x64 is on.
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:4],
                         np.int32)[0]
  hashes = multihost_utils.process_allgather(np.asarray(digest))
  return bool(np.all(hashes == digest))


def writes_outputs() -> bool:
  """Process 0 writes images and manifests; the others only compute."""
  return jax.process_index() == 0


def device_info() -> dict:
  """The platform, kind and count of the devices, and the process count."""
  devices = jax.devices()
  return {'platform': devices[0].platform,
          'kind': devices[0].device_kind, 'count': len(devices),
          'processes': jax.process_count()}


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` once, before any device is used.

  On Cloud TPU pods, SLURM, Open MPI and Kubernetes JAX finds the cluster
  itself. Elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  and NST_JAX_NUM_PROCESSES and NST_JAX_PROCESS_ID on every process.
  """
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  for name, key in (('NST_JAX_NUM_PROCESSES', 'num_processes'),
                    ('NST_JAX_PROCESS_ID', 'process_id')):
    if os.environ.get(name):
      try:
        kwargs[key] = int(os.environ[name])
      except ValueError:
        raise UserError(f'{name}: must be an integer, got '
                        f'{os.environ[name]!r}') from None
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as error:
    first_line = str(error).strip().splitlines()[0] if str(error) else ''
    raise UserError('config.distributed: jax.distributed.initialize() '
                    f'failed: {first_line}') from None
