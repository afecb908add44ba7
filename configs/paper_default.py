"""The paper's settings (Gatys, Ecker, Bethge 2015/2016), for its figures.

Exactly the formulas and choices of "A Neural Algorithm of Artistic Style":
the un-normalised losses (`loss_normalization='paper'`: content
1/2 sum (F - P)^2, E_l = 1/(4 N_l^2 M_l^2) sum (G - A)^2), average pooling,
L-BFGS, white-noise start, content layer conv4_2, style layers
conv1_1 .. conv5_1 with w_l = 1/5, alpha/beta = 1e-3, 512 px.

Run (see docs/figures.md; the figure sets the layers and weights):
  python scripts/reproduce_figures.py --figure=3 \
      --content=Tuebingen_Neckarfront.jpg --style=Composition_VII.jpg \
      --out=out/figures
  # a smoke run on built-in images with random weights, a few minutes on CPU:
  python scripts/reproduce_figures.py --figure=3 --out=out/smoke \
      --config.image_size=64 --config.iterations=30 --config.weights=random

Or one plain run with the paper's losses:
  python -m nst_jax.main --config=paper_default \
      --config.content=photo.jpg --config.style=painting.jpg
"""

from nst_jax.configs import default


def get_config():
  config = default.get_config()
  config.output = 'out/paper.png'
  config.weights = 'auto'             # pretrained VGG19; pass 'random' for a
  config.allow_random_weights = False  # smoke run, never silently
  config.image_size = 512             # "about 512 x 512" (CVPR 2016)
  config.style_scale = 1.0
  config.content_layers = 'conv4_2'
  config.style_layers = 'conv1_1,conv2_1,conv3_1,conv4_1,conv5_1'
  config.style_layer_weights = ''     # w_l = 1/|L| = 1/5
  config.content_weight = 1.0         # alpha
  config.style_weight = 1e3           # beta: alpha/beta = 1e-3
  config.tv_weight = 0.0              # the paper has no TV term
  config.loss_normalization = 'paper'
  config.pooling = 'avg'              # "slightly more appealing results"
  config.optimizer = 'lbfgs'
  config.init = 'noise'               # white noise
  config.iterations = 500             # the paper does not say; 500 is the
                                      # authors' later notebook's budget
  config.log_every = 10
  return config
