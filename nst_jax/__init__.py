"""nst_jax: Gatys, Ecker and Bethge's neural style transfer in JAX/Flax.

Example::

  import nst_jax
  result = nst_jax.stylize('photo.jpg', 'painting.jpg', image_size=256)
  result.save('out/result.png')
  clip = nst_jax.stylize_video('clip.mp4', 'painting.jpg', 'out/clip.mp4')
  clip.frames, clip.video, clip.manifest
"""

from nst_jax.errors import UserError

__version__ = '0.1.0'
__all__ = ['Result', 'UserError', 'VideoResult', 'stylize', 'stylize_video']


def __getattr__(name):
  # Lazily, so `import nst_jax` (and the command line's --help) does not
  # start JAX.
  if name in ('stylize', 'Result'):
    from nst_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  if name in ('stylize_video', 'VideoResult'):
    from nst_jax import video  # pylint: disable=g-import-not-at-top
    return getattr(video, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
