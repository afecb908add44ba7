"""The shipped configs, installed as the package `nst_jax.configs`.

Pick one by name (`nst-jax --config=cpu`) or by path
(`--config=configs/cpu.py`). A config of your own can start from a shipped
one::

  from nst_jax.configs import default

  def get_config():
    config = default.get_config()
    config.image_size = 768
    return config
"""
