"""The manifest: what a run did, as JSON beside its output.

One schema for every kind of run: `kind` says what it describes ('still',
'sweep' or 'video'), `manifest_version` its format, and `outputs` the
files written (`with_outputs`; a clip's are known as it runs). It records
the config, the weights (file, checksum, source, whether random), the
devices and versions, each member's initial and final loss terms, its
history, why it stopped, and the timings, so a result can be traced and
rerun.
"""

from __future__ import annotations

import json
import math
import os
import platform

import jax
import numpy as np

import nst_jax
from nst_jax.io import files


# The format of the manifest; raised when a key changes meaning or moves.
MANIFEST_VERSION = 2
KINDS = ('still', 'sweep', 'video')


def header(kind: str) -> dict:
  """The entries that say what a manifest describes."""
  assert kind in KINDS, kind
  return {'kind': kind, 'manifest_version': MANIFEST_VERSION}


def _finite_or_none(value):
  value = float(value)
  return value if math.isfinite(value) else None


def terms_to_json(terms) -> dict:
  """`objective.loss_terms` output -> plain floats (non-finite as null)."""
  result = {
      'total': _finite_or_none(terms['total']),
      'content': _finite_or_none(terms['content']),
      'style': _finite_or_none(terms['style']),
      'style_layers': {name: _finite_or_none(v)
                       for name, v in terms['style_layers'].items()},
      'tv': _finite_or_none(terms['tv'])}
  if 'temporal' in terms:  # video
    result['temporal'] = _finite_or_none(terms['temporal'])
  return result


def history_row(iteration, evaluations, terms, width) -> dict:
  """One row of a member's `history`."""
  return {'iteration': iteration, 'evaluations': evaluations,
          'total': terms['total'], 'content': terms['content'],
          'style': terms['style'], 'width': width}


def json_safe(value):
  """NaN and infinities -> None, tuples -> lists, recursively."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def write_json(path: str, data: dict) -> None:
  """Writes JSON atomically (`files.atomic_write`)."""
  text = json.dumps(json_safe(data), indent=2, allow_nan=False)
  files.atomic_write(path, lambda f: f.write(text.encode()))


def versions() -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {'nst_jax': nst_jax.__version__, 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
          'optax': optax.__version__, 'numpy': np.__version__,
          'python': platform.python_version()}


def config_dict(config) -> dict:
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def overall_reason(reasons) -> str:
  """A sweep's stop reason: interrupted or non_finite if any member was,
  else the members' common reason, else 'mixed'."""
  for reason in ('interrupted', 'non_finite'):
    if reason in reasons:
      return reason
  return reasons[0] if len(set(reasons)) == 1 else 'mixed'


def member_output(output: str, k: int, count: int) -> str:
  """out/result.png for a single run, out/result_<k>.png in a sweep."""
  if count == 1:
    return output
  stem, ext = os.path.splitext(output)
  return f'{stem}_{k}{ext}'


def grid_output(output: str) -> str:
  """out/result.png -> out/result_grid.png (a sweep's grid)."""
  return os.path.splitext(output)[0] + '_grid.png'


def numbered_path(output: str, iteration: int) -> str:
  """out/result.png -> out/result_iter0050.png."""
  stem, ext = os.path.splitext(output)
  return f'{stem}_iter{iteration:04d}{ext}'


def manifest_path(output: str) -> str:
  """out/result.png -> out/result.json."""
  return os.path.splitext(output)[0] + '.json'


def with_outputs(manifest: dict, output: str) -> dict:
  """`manifest` (a still image's or a sweep's, without paths) with the
  paths the outputs get when saved as `output`: `outputs` = {'image',
  'manifest'} for a still image, {'images', 'grid', 'manifest'} for a
  sweep, whose `runs` entries each get their own `output`."""
  manifest = dict(manifest)
  runs = manifest.get('runs')
  if runs is None:
    manifest['outputs'] = {'image': output,
                           'manifest': manifest_path(output)}
  else:
    manifest['runs'] = [dict(run, output=member_output(output, k, len(runs)))
                        for k, run in enumerate(runs)]
    manifest['outputs'] = {'images': [run['output']
                                      for run in manifest['runs']],
                           'grid': grid_output(output),
                           'manifest': manifest_path(output)}
  return manifest


def output_lines(manifest: dict) -> list:
  """The images or the clip a run wrote (not the manifest), one line each,
  for the command line's summary: the same for a finished and a partial
  manifest of any kind."""
  outputs = manifest.get('outputs') or {}
  if manifest.get('kind') == 'video':
    lines = [f'{outputs.get("frames")}/ ({manifest.get("frames_done", 0)} '
             'frames)']
    if outputs.get('video'):
      lines.insert(0, outputs['video'])
  else:
    lines = list(outputs.get('images') or [outputs.get('image')])
    if outputs.get('grid'):
      lines.append(outputs['grid'])
  return [line for line in lines if line]
