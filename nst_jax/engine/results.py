"""What a run made: one family of results for images, sweeps and clips.

Every result has its `manifest` (the dict written as JSON beside the
output; `manifest['kind']` says 'still', 'sweep' or 'video'), `partial`
(whether the run was interrupted) and `save(path)`. An image result holds
its images in memory; a clip does not fit in memory, so a video result
holds the paths of the frames written as they finished, and of the clip.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Optional

import numpy as np

from nst_jax.engine import devices as devices_lib, settings as settings_lib
from nst_jax.errors import UserError
from nst_jax.io import files, grids, images, manifest as manifest_lib


@dataclasses.dataclass
class Result:
  """What `stylize` made.

  Attributes:
    images: the final image of each member (one without a sweep), uint8
      (H, W, 3).
    manifest: the dict the command line writes as JSON, without output
      paths (`save` adds them).
    labels: each member's grid label (a sweep's).
    grid_columns: the sweep grid's columns (None: automatic).
  """
  images: list
  manifest: dict
  labels: list = dataclasses.field(default_factory=list)
  grid_columns: Optional[int] = None

  @property
  def image(self) -> np.ndarray:
    """The image of a run without a sweep; a sweep's labelled grid."""
    return self.images[0] if len(self.images) == 1 else self.grid

  @property
  def grid(self) -> np.ndarray:
    """All members' images in one labelled grid (uint8)."""
    return images.to_uint8(grids.make_grid(
        self.images, labels=self.labels if len(self.images) > 1 else None,
        columns=self.grid_columns))

  @property
  def partial(self) -> bool:
    """Whether the run was interrupted before it finished."""
    return bool(self.manifest.get('partial'))

  def save(self, path) -> dict:
    """Writes the image(s) and the manifest, each atomically, as the command
    line does: `path` and its `.json`; a sweep writes `<stem>_<k>` per
    member and `<stem>_grid`. Across hosts only process 0 writes.

    Returns:
      The manifest with the output paths (`outputs`).
    Raises:
      UserError: a path that cannot be written.
    """
    path = os.fspath(path)
    settings_lib.check_output(path, [])
    manifest = manifest_lib.with_outputs(self.manifest, path)
    if devices_lib.writes_outputs():
      count = len(self.images)
      for k, image in enumerate(self.images):
        images.save_image(manifest_lib.member_output(path, k, count), image)
      if count > 1:
        images.save_image(manifest['outputs']['grid'], self.grid)
      manifest_lib.write_json(manifest_lib.manifest_path(path), manifest)
    return manifest


@dataclasses.dataclass
class VideoResult:
  """What `stylize_video` made: written as it went, so held as paths.

  Attributes:
    manifest: the clip's manifest (also written beside the output).
  """
  manifest: dict

  @property
  def partial(self) -> bool:
    """Whether the run was interrupted before the clip was encoded."""
    return bool(self.manifest.get('partial'))

  @property
  def frames(self) -> list:
    """The paths of the stylised frames written so far, in order."""
    folder = self.manifest['outputs']['frames']
    return [os.path.join(folder, entry['file'])
            for entry in self.manifest['frames']]

  @property
  def video(self) -> Optional[str]:
    """The encoded clip's path (None while partial)."""
    return self.manifest['outputs']['video']

  def save(self, path) -> dict:
    """Copies the encoded clip to `path` and writes the manifest beside it.

    Returns:
      The manifest with `outputs['video']` = `path`.
    Raises:
      UserError: a partial clip (nothing encoded yet) or a path that
        cannot be written.
    """
    path = os.fspath(path)
    if self.video is None:
      raise UserError(
          f'{path}: the clip is partial (interrupted); run it again to '
          'finish it, then save')
    settings_lib.check_output(path, [], video=True)
    manifest = dict(self.manifest,
                    outputs=dict(self.manifest['outputs'], video=path))
    if devices_lib.writes_outputs() and (
        os.path.abspath(path) != os.path.abspath(self.video)):
      with open(self.video, 'rb') as source:  # a clip, in blocks
        files.atomic_write(path, lambda f: shutil.copyfileobj(source, f))
    if devices_lib.writes_outputs():
      manifest_lib.write_json(manifest_lib.manifest_path(path), manifest)
    return manifest
