"""`python -m nst_jax.weights`: convert, fetch, random, normalize, info.

  python -m nst_jax.weights convert --source=keras IN.h5 OUT.npz
  python -m nst_jax.weights convert --source=torchvision IN.pth OUT.npz
  python -m nst_jax.weights fetch [OUT.npz] [--url=URL --md5=MD5]
  python -m nst_jax.weights random --seed=N OUT.npz
  python -m nst_jax.weights normalize IN.npz OUT.npz --images=DIR
  python -m nst_jax.weights info FILE.npz

Errors are one line on stderr with exit status 2; no output file is left.
"""

import argparse
import json
import os
import sys

import numpy as np

from nst_jax import weights
from nst_jax.errors import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


def _refuse_same(source, out):
  if os.path.abspath(source) == os.path.abspath(out):
    raise UserError(f'output {out}: same path as the input')


def _images(folder, longest=256):
  """RGB arrays of every image in `folder`, longest side at most 256."""
  from nst_jax import images  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(folder):
    raise UserError(f'--images {folder}: not a folder')
  paths = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                 if n.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise UserError(f'--images {folder}: no images in it')
  loaded = []
  for path in paths:
    pixels = images.load_image(path)
    size = max(pixels.shape[:2])
    loaded.append(pixels if size <= longest else images.load_image(
        path, longest))
  return loaded


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m nst_jax.weights',
                                   description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest='command', required=True)
  convert = commands.add_parser('convert', help='convert a downloaded file')
  convert.add_argument('--source', choices=('keras', 'torchvision'),
                       required=True)
  convert.add_argument('input')
  convert.add_argument('output')
  fetch = commands.add_parser('fetch', help='download and convert Keras')
  fetch.add_argument('output', nargs='?', default=weights.DEFAULT_OUTPUT)
  fetch.add_argument('--url', default=weights.KERAS_URL)
  fetch.add_argument('--md5', default=weights.KERAS_MD5)
  random = commands.add_parser('random', help='seeded untrained weights')
  random.add_argument('--seed', type=int, default=0)
  random.add_argument('output')
  normalize = commands.add_parser('normalize', help="Gatys' normalised VGG")
  normalize.add_argument('input')
  normalize.add_argument('output')
  normalize.add_argument('--images', required=True)
  info = commands.add_parser('info', help='print a converted file')
  info.add_argument('input')
  args = parser.parse_args(argv)

  try:
    if args.command == 'convert':
      _refuse_same(args.input, args.output)
      reader = (weights.convert_keras if args.source == 'keras'
                else weights.convert_torchvision)
      weights.save_weights(args.output, *reader(args.input))
    elif args.command == 'fetch':
      weights.fetch(args.output, url=args.url, md5=args.md5)
    elif args.command == 'random':
      weights.save_weights(args.output, *weights.random_weights(args.seed))
      print('wrote RANDOM, UNTRAINED weights to', args.output)
    elif args.command == 'normalize':
      _refuse_same(args.input, args.output)
      params, meta = weights.load_weights(args.input)
      weights.save_weights(args.output, *weights.normalize(
          params, meta, _images(args.images)))
    elif args.command == 'info':
      params, meta = weights.load_weights(args.input)
      print(json.dumps(meta, indent=2))
      for name, layer in params.items():
        print(name, tuple(layer['kernel'].shape),
              f'kernel mean |w| {np.abs(layer["kernel"]).mean():.4g}')
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr)
    return 130
  if args.command in ('convert', 'normalize'):
    print('wrote', args.output)
  return 0


if __name__ == '__main__':
  sys.exit(main())
