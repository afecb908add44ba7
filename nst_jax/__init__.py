"""nst_jax: Gatys, Ecker and Bethge's neural style transfer in JAX/Flax."""

__version__ = '0.1.0'
