#!/usr/bin/env python3
"""float32 against bfloat16 convolutions, per optimiser: the final loss and
the evaluations spent, from white noise.

  python scripts/precision_study.py [--image_size=64] [--iterations=250]
      [--optimizers=lbfgs,lbfgs_nols]

Built-in images, seeded random VGG19 weights, the default config's losses,
direct convolutions (as on accelerators). On a CPU bfloat16 is emulated, so
only the losses and evaluation counts mean anything, not the times. Prints a
Markdown table.
"""

import argparse

import nst_jax
from nst_jax.core import optimizers


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--iterations', type=int, default=250)
  parser.add_argument('--optimizers', default='lbfgs,lbfgs_nols',
                      help='comma-separated, of ' + ', '.join(
                          optimizers.OPTIMIZERS))
  args = parser.parse_args()
  print('| dtype | optimizer | final loss | evaluations | steps | stop |')
  print('|---|---|---|---|---|---|')
  for optimizer in [o for o in args.optimizers.split(',') if o.strip()]:
    for dtype in ('float32', 'bfloat16'):
      manifest = nst_jax.stylize(
          'builtin:scene', 'builtin:painting', image_size=args.image_size,
          iterations=args.iterations, log_every=50, weights='random',
          init='noise', dtype=dtype, optimizer=optimizer,
          conv_algorithm='direct').manifest
      print(f'| {dtype} | {optimizer} | {manifest["final"]["total"]:.5g} | '
            f'{manifest["evaluations"]} | {manifest["iterations_done"]} | '
            f'{manifest["stop_reason"]} |', flush=True)


if __name__ == '__main__':
  main()
