"""One GPU: paper-sized images, bf16 convolutions (Gram sums stay float32).

Run:
  python -m nst_jax.main --config=gpu \
      --config.content=photo.jpg --config.style=painting.jpg
"""

from nst_jax.configs import default


def get_config():
  config = default.get_config()
  config.image_size = 512
  config.iterations = 500
  config.dtype = 'bfloat16'
  # In bfloat16 the line search stalls once its trial steps fall below the
  # loss's resolution; the fixed-step L-BFGS converges as in float32
  # (docs/performance.md, precision).
  config.optimizer = 'lbfgs_nols'
  config.log_every = 50
  return config
