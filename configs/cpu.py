"""Small and quick, for a laptop CPU (a few minutes at 256 px).

Run:
  python -m nst_jax.main --config=cpu \
      --config.content=photo.jpg --config.style=painting.jpg
"""

from nst_jax.configs import default


def get_config():
  config = default.get_config()
  config.image_size = 256
  config.iterations = 200
  config.init = 'content'  # converges in far fewer steps than noise
  return config
