"""A TPU host: larger images, bf16 convolutions (the MXU's native type; Gram
sums and losses stay float32), long compiled chunks.

Run:
  python -m nst_jax.main --config=configs/tpu.py \
      --config.content=photo.jpg --config.style=painting.jpg
"""

from configs import default


def get_config():
  config = default.get_config()
  config.image_size = 1024
  config.iterations = 500
  config.dtype = 'bfloat16'
  config.log_every = 100
  return config
