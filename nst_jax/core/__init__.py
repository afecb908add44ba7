"""The numerical core: pure JAX functions of arrays and pytrees.

VGG19, its convolutions (direct and Winograd), row strips, the losses and
the other definitions of style, the temporal loss, colour transforms and
the optimisers as optax transformations with the loop's step. Nothing here
reads a config, raises `nst_jax.UserError` or touches a file; the engine
(`nst_jax.engine`) checks settings before they reach it.
"""
