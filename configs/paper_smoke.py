"""The paper's settings at thumbnail size, for smoke runs.

Not the paper's results: 64 px, 30 L-BFGS steps, seeded RANDOM untrained
VGG19 weights, built-in images unless --content/--style are given.

Run (a few minutes per figure on a 2-core CPU):
  python scripts/reproduce_figures.py --figure=3 \
      --config=paper_smoke --out=out/smoke
"""

from nst_jax.configs import paper_default


def get_config():
  config = paper_default.get_config()
  config.image_size = 64
  config.iterations = 30
  config.weights = 'random'
  return config
