"""The demo: needs nothing from the user, about a minute on a 2-core CPU.

Content and style are drawn by nst_jax itself (`builtin:scene`, a house and
hills under a sky; `builtin:painting`, bold brush strokes). Weights: the
converted pretrained VGG19 in weights/ if present, else downloaded when
online, else seeded RANDOM weights (He, Wang, Hopcroft 2016), which the log
and the manifest say loudly.

Run:
  make demo
  # or: python -m nst_jax.main --config=demo
"""

from nst_jax.configs import default


def get_config():
  config = default.get_config()
  config.content = 'builtin:scene'
  config.style = 'builtin:painting'
  config.output = 'out/demo.png'
  config.allow_random_weights = True
  config.image_size = 128
  config.init = 'content'
  config.iterations = 100
  config.log_every = 10
  return config
