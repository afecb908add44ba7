"""One preparation step for every run: still images, sweeps and video.

`prepare` turns checked settings and the sizes a run will see into what
the loop needs, resolved once and in one order: the processes of a
cluster, the program cache, the devices, the convolution algorithm, how
the run fits the device's memory (row strips and L-BFGS pairs), the VGG19
weights, the loss spec and the network's variables. Its `Prepared` also
writes the manifest's blocks that describe them (`weights`, `device`,
`versions`, `warnings`), so a still image, a sweep and a clip record them
alike.

Example::

  prepared = prepare.prepare(settings, height=256, width=256,
                             network_sizes=[(256, 256)], members=1)
  run = prepared.run(members, loop.Reporter())
  levels = loop.optimize(run, prepared.variables, level_inputs, starts)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from absl import logging

from nst_jax.core import losses
from nst_jax.io import manifest as manifest_lib
from nst_jax.engine import devices as devices_lib, inputs, loop, memory
from nst_jax.engine import programs as programs_lib


def conv_algorithm_for(conv_algorithm: str, platform: str, dtype: str,
                       shard_rows: bool = False) -> str:
  """'auto' -> 'winograd' on CPU in float32, else 'direct'.

  On CPU Winograd's algorithm does 2.25-4x fewer multiply-adds per layer.
  GPU libraries (cuDNN) pick Winograd kernels themselves and TPUs run
  convolutions on their matrix units, where the transforms would only add
  memory traffic; in bfloat16 the transforms lose too much precision; with
  rows split over devices the direct convolution's halo exchange is
  simpler.
  """
  if conv_algorithm != 'auto':
    return conv_algorithm
  if platform == 'cpu' and dtype == 'float32' and not shard_rows:
    return 'winograd'
  return 'direct'


def sweep_mode_for(sweep_mode: str) -> str:
  """'auto' -> 'vmap': batched members fill an accelerator, and on a CPU a
  batched evaluation uses the cores better than several small ones.
  'map' (one member after another) gives each member its stand-alone
  program exactly; 'vmap' matches it up to floating-point reassociation."""
  return 'vmap' if sweep_mode == 'auto' else sweep_mode


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `prepare` resolved; the same for every level, frame and member.

  Attributes:
    settings: the settings with the memory fit applied (`lbfgs_memory`,
      and the spec's `row_strips` and `strip_split`).
    spec: the loss spec the programs run: the fit's strips, the weights'
      preprocessing, the convolution algorithm, and for video the temporal
      references and the joint window.
    devices: the devices the members (or a joint window's frames) use.
    mode: how a device runs several members: 'vmap' or 'map'.
    programs: the compiled programs and their cache.
    variables: the network's variables (`programs.prepare_variables`).
    fit: `memory.Fit`.
    conv_algorithm: 'direct' or 'winograd'.
    cache_folder: the compilation cache's folder ('' when off).
    weights: the manifest's `weights` entry.
    warnings: what the settings, the fit and the weights warned of.
    cache_counts: the program cache's (loaded, traced) counts before the
      run, so the manifest can say what this run loaded.
  """
  settings: object
  spec: losses.LossSpec
  devices: tuple
  mode: str
  programs: programs_lib.Programs
  variables: dict
  fit: memory.Fit
  conv_algorithm: str
  cache_folder: str
  weights: dict
  warnings: tuple
  cache_counts: tuple

  def run(self, members: Sequence, reporter: loop.Reporter, *,
          should_stop: Callable[[], bool] = lambda: False,
          on_snapshot: Optional[Callable] = None,
          finish: Callable = lambda pixels: pixels,
          checkpoints=None) -> loop.Run:
    """The loop's fixed parts for `members` (`sweeps.Member`s)."""
    return loop.Run(settings=self.settings, spec=self.spec,
                    members=tuple(members), mode=self.mode,
                    devices=self.devices, programs=self.programs,
                    reporter=reporter, should_stop=should_stop,
                    on_snapshot=on_snapshot, finish=finish,
                    checkpoints=checkpoints)

  def device_manifest(self) -> dict:
    """The manifest's `device` entry: the devices, how the members ran, the
    convolution algorithm and the memory fit."""
    fit = self.fit
    entry = dict(devices_lib.device_info(), used=len(self.devices),
                 sweep_mode=self.mode, shard_rows=self.settings.shard_rows,
                 conv_algorithm=self.conv_algorithm,
                 row_strips=fit.row_strips,
                 strip_split=fit.strip_split if fit.row_strips > 1 else None,
                 memory_estimate_gib=round(fit.needed / 2**30, 3),
                 memory_limit_gib=round(fit.limit / 2**30, 3))
    if self.settings.optimizer in ('lbfgs', 'lbfgs_nols'):
      entry['lbfgs_memory_used'] = fit.lbfgs_memory
    return entry

  def manifest_blocks(self) -> dict:
    """The manifest entries every kind of run shares."""
    return {'weights': self.weights, 'warnings': list(self.warnings),
            'device': self.device_manifest(),
            'versions': manifest_lib.versions(),
            'compilation_cache': self.cache_folder or None}

  def programs_manifest(self) -> dict:
    """The manifest's `programs` entry: the programs loaded from the
    program cache and traced during the run, and the compilations."""
    cache = self.programs.program_cache
    loaded, traced = _cache_counts(self.programs)
    return {'cache': cache.folder if cache else None,
            'loaded': loaded - self.cache_counts[0],
            'traced': (traced - self.cache_counts[1]) if cache else None,
            'compilations': self.programs.compilations}


def _cache_counts(programs) -> tuple:
  cache = programs.program_cache
  return (cache.loaded, cache.traced) if cache else (0, 0)


def prepare(settings, *, height: int, width: int,
            network_sizes: Sequence[tuple], members: int = 1,
            frames: int = 0, temporal: int = 0, allow_random_weights=False,
            programs: Optional[programs_lib.Programs] = None,
            log: Callable[[str], None] = logging.warning) -> Prepared:
  """Resolves what a run needs before its first image is optimised.

  Args:
    settings: `settings.check(config)`.
    height, width: the optimised image's size (the last level's, a
      frame's).
    network_sizes: every (height, width) the network sees: each level's
      content and styles, a frame's content and styles.
    members: sweep members (1 for a single image or a clip).
    frames: a joint video window's frames, optimised as one problem (0:
      one image per problem).
    temporal: the fixed temporal references per frame (video; 0: none).
    allow_random_weights: fall back to seeded random weights when the
      weights file is missing, with a warning.
    programs: where compiled programs are kept (default: the process's).
    log: where warnings go, as they are found.
  Returns:
    `Prepared`.
  Raises:
    UserError: the run does not fit the device's memory even in strips,
      the weights cannot be read, or a joint window does not split over
      the devices of several hosts.
  """
  if settings.distributed:
    devices_lib.initialize_distributed()
  cache_folder, program_cache = programs_lib.open_cache(
      settings.compilation_cache)
  programs = programs or programs_lib.shared(program_cache)
  cache_counts = _cache_counts(programs)
  if frames:
    devices = devices_lib.frame_devices(frames)
  else:
    devices = devices_lib.member_devices(members, settings.shard_rows)
  conv_algorithm = conv_algorithm_for(
      settings.conv_algorithm, devices[0].platform, settings.spec.dtype,
      settings.shard_rows)
  mode = sweep_mode_for(settings.sweep_mode)
  if frames:  # a window's frames are one problem, split over the devices
    per_device, batched = frames // len(devices), True
  else:
    per_device = 1 if settings.shard_rows else -(-members // len(devices))
    batched = mode == 'vmap' and per_device > 1
  # Row strips (row_strips=0: only where needed) and L-BFGS's pairs, chosen
  # so the run fits; everything below runs with them.
  fit = memory.fit(settings, height, width,
                   shards=len(devices) if settings.shard_rows else 1,
                   use_winograd=conv_algorithm == 'winograd',
                   members=per_device, batched=batched)
  settings = dataclasses.replace(
      settings, lbfgs_memory=fit.lbfgs_memory,
      spec=dataclasses.replace(settings.spec, row_strips=fit.row_strips,
                               strip_split=fit.strip_split))
  warnings = list(settings.warnings) + list(fit.warnings)
  if settings.shard_rows and height % len(devices):
    warnings.append(
        f'shard_rows: {height} rows do not divide evenly over {len(devices)} '
        'devices, so the image is not split (each device holds all of it); '
        f'use an image height that is a multiple of {len(devices)}')
  for warning in warnings:
    log(warning)
  params, meta, weights_path, weight_warnings = inputs.load_weights(
      settings, allow_random_weights, log)
  warnings += weight_warnings
  spec = dataclasses.replace(settings.spec,
                             preprocessing=meta['preprocessing'],
                             conv_algorithm=conv_algorithm,
                             temporal=temporal, frames=frames,
                             temporal_blur=(settings.video.temporal_blur
                                            if temporal or frames else 0.0))
  variables = programs.prepare_variables(
      params, tuple(sorted(set(map(tuple, network_sizes))))
      if conv_algorithm == 'winograd' else (), spec.layers)
  return Prepared(
      settings=settings, spec=spec, devices=tuple(devices), mode=mode,
      programs=programs, variables=variables, fit=fit,
      conv_algorithm=conv_algorithm, cache_folder=cache_folder,
      weights=inputs.weights_manifest(meta, weights_path),
      warnings=tuple(warnings), cache_counts=cache_counts)
