"""The engine: checked settings, sweeps, one preparation step for every
run (weights, devices, convolution algorithm, memory fit, variables,
programs), the compiled programs and their cache, and the loop.

It builds on `nst_jax.core` and `nst_jax.io`, and is what every front end
(`stylize`, `stylize_video`, the command line, the web page) calls.
"""
