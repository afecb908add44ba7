"""nst_jax: Gatys, Ecker and Bethge's neural style transfer in JAX/Flax.

Example::

  import nst_jax
  result = nst_jax.stylize('photo.jpg', 'painting.jpg', image_size=256)
  result.save('out/result.png')
"""

from nst_jax.errors import UserError

__version__ = '0.1.0'
__all__ = ['Result', 'UserError', 'stylize']


def __getattr__(name):
  # Lazily, so `import nst_jax` (and the command line's --help) does not
  # start JAX.
  if name in ('stylize', 'Result'):
    from nst_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
