"""The local web page (`nst-jax serve`): style transfer in a browser.

`jobs` holds what a run from the page does (its settings from the page's
controls, its uploads, its live updates, its files) and knows nothing of
Gradio; `page` lays out the Gradio page on top of it; `serve` is the
command. Gradio is an optional extra: `pip install 'nst_jax[web]'`.
"""
