"""A TPU host: larger images, bf16 convolutions, long compiled chunks.

bfloat16 is the MXU's native type; Gram sums and losses stay float32.

Run:
  python -m nst_jax.main --config=tpu \
      --config.content=photo.jpg --config.style=painting.jpg

On a pod slice, run the same command on every host with
--config.distributed=True; to split one large image over the chips add
--config.shard_rows=True (the image height should divide by the chip count).
"""

from nst_jax.configs import default


def get_config():
  config = default.get_config()
  config.image_size = 1024
  config.iterations = 500
  config.dtype = 'bfloat16'
  config.log_every = 100
  return config
