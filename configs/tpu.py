"""A TPU host: larger images split over its chips, bf16 convolutions.

bfloat16 is the MXU's native type; Gram sums and losses stay float32. One
image's rows are split over every chip of the host (`shard_rows`), so a
single 1024 px image uses all 4-8 of them; for a sweep of several settings,
one member per chip, add --config.shard_rows=False.

Run:
  python -m nst_jax.main --config=tpu \
      --config.content=photo.jpg --config.style=painting.jpg

On a pod slice, run the same command on every host with
--config.distributed=True. A chunk of 100 steps lasts seconds at this size,
well inside a preemptible VM's 30 s notice: the partial result is saved at
the next chunk.
"""

from nst_jax.configs import default


def get_config():
  config = default.get_config()
  config.image_size = 1024
  config.iterations = 500
  config.dtype = 'bfloat16'
  # In bfloat16 the line search stalls once its trial steps fall below the
  # loss's resolution; the fixed-step L-BFGS converges as in float32
  # (docs/performance.md, precision).
  config.optimizer = 'lbfgs_nols'
  config.shard_rows = True
  config.log_every = 100
  return config
