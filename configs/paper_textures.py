"""Texture synthesis as in Gatys, Ecker, Bethge 2015 (arXiv:1505.07376).

The figure sets the layers (conv1_1, pool1 .. pool4, Gram matching only, from
white noise); this config sets the texture paper's size, about 256 px, on top
of the paper's other settings (configs/paper_default.py).

Run:
  python scripts/reproduce_figures.py --figure=textures \
      --config=paper_textures --style=texture.jpg --out=out/figures
"""

from nst_jax.configs import paper_default


def get_config():
  config = paper_default.get_config()
  config.image_size = 256
  return config
