#!/usr/bin/env python3
"""Compares step sizes of the first-order optimisers (`adam`, `sgd`) with
L-BFGS: the loss after a fixed number of steps, from the content image.

  python scripts/learning_rates.py [--image_size=128] [--iterations=60]

Built-in images and seeded random VGG19 weights, so it runs anywhere; the
invariant losses of configs/default.py. Prints one line per setting.
"""

import argparse

import nst_jax

STEP_SIZES = {'adam': (1.0, 4.0, 10.0, 20.0),
              'sgd': (1e1, 1e2, 1e3, 1e4, 1e5)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--image_size', type=int, default=128)
  parser.add_argument('--iterations', type=int, default=60)
  args = parser.parse_args()
  fields = dict(image_size=args.image_size, iterations=args.iterations,
                log_every=args.iterations, weights='random', init='content')
  print(f'{"optimizer":10} {"step":>8} {"initial":>10} {"final":>10}  stop')
  runs = [(name, step) for name, steps in STEP_SIZES.items()
          for step in steps] + [('lbfgs', 0.0)]
  for name, step in runs:
    manifest = nst_jax.stylize('builtin:scene', 'builtin:painting',
                               optimizer=name, learning_rate=step,
                               **fields).manifest
    final = manifest['final']['total']
    print(f'{name:10} {manifest["learning_rate"]:8.3g} '
          f'{manifest["initial"]["total"]:10.4g} '
          f'{float("nan") if final is None else final:10.4g}  '
          f'{manifest["stop_reason"]}', flush=True)


if __name__ == '__main__':
  main()
