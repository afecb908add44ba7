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
import textwrap

import numpy as np

from nst_jax import weights
from nst_jax.errors import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


def _refuse_same(source, out):
  if os.path.abspath(source) == os.path.abspath(out):
    raise UserError(f'output {out}: same path as the input')


def _images(folder, longest=256):
  """RGB arrays of every image in `folder`, longest side at most 256."""
  from nst_jax.io import images  # pylint: disable=g-import-not-at-top
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


def _parser() -> argparse.ArgumentParser:
  """The command line: one subcommand per task, each documented."""
  parser = argparse.ArgumentParser(
      prog='python -m nst_jax.weights',
      description=textwrap.dedent("""\
          VGG19 weights for nst_jax: download, convert, make random or
          normalised ones, inspect. `python -m nst_jax.weights COMMAND --help`
          explains a command and its arguments. Errors are one line on stderr
          with exit status 2; no output file is left half-written."""),
      epilog='examples:\n' + __doc__.split('\n\n')[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True,
                                   metavar='COMMAND')

  convert = commands.add_parser(
      'convert', help='convert a VGG19 file you downloaded yourself',
      description="Converts a Keras or torchvision VGG19 file into nst_jax's "
      ".npz format. Reading never executes the file's code (a .pth's pickle "
      'is read without running it).')
  convert.add_argument(
      '--source', choices=('keras', 'torchvision'), required=True,
      help="the input's kind: 'keras' for "
      'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 (the VGG authors\' '
      "Caffe weights), 'torchvision' for vgg19-dcbb9e9d.pth")
  convert.add_argument('input', help='the downloaded .h5 or .pth file')
  convert.add_argument('output', help='the converted .npz to write')

  fetch = commands.add_parser(
      'fetch', help='download the Keras weights (about 80 MB) and convert',
      description='Downloads the Keras VGG19 notop file, checks its MD5 and '
      'converts it. On a terminal the progress shows in place. Runs with '
      f'weights=auto (the default) look for {weights.DEFAULT_OUTPUT}, or '
      'the same name in $NST_JAX_WEIGHTS_DIR.')
  fetch.add_argument(
      'output', nargs='?', default=weights.DEFAULT_OUTPUT,
      help=f'the converted .npz to write (default: {weights.DEFAULT_OUTPUT})')
  fetch.add_argument('--url', default=weights.KERAS_URL,
                     help='where to download from, e.g. a mirror (default: '
                     "Keras' storage)")
  fetch.add_argument('--md5', default=weights.KERAS_MD5,
                     help="the download's expected MD5; a mismatch stops "
                     "with nothing written (default: the Keras file's, "
                     f'{weights.KERAS_MD5})')

  random = commands.add_parser(
      'random', help='write seeded random, untrained weights (offline)',
      description='Writes He-normal random VGG19 weights: no download '
      'needed, but results are much weaker than with trained ones, and '
      'runs using them say so.')
  random.add_argument('--seed', type=int, default=0,
                      help='the random seed; the same seed gives the same '
                      'weights on every machine (default: 0)')
  random.add_argument('output', help='the .npz to write')

  normalize = commands.add_parser(
      'normalize', help="rescale to Gatys et al.'s normalised network",
      description='Rescales each filter so that its mean activation over '
      'the given images is 1, as Gatys et al. normalised the VGG19 of '
      'their papers.')
  normalize.add_argument('input', help='a converted .npz')
  normalize.add_argument('output', help='the normalised .npz to write')
  normalize.add_argument(
      '--images', required=True, metavar='FOLDER',
      help='a folder of images (.png, .jpg, ...) to average the activations '
      'over; each is read at most 256 px on its longest side')

  info = commands.add_parser(
      'info', help="print a converted file's metadata and layers",
      description="Prints a converted file's metadata (source, "
      'preprocessing, normalised, random, ...) and each layer\'s kernel '
      'shape and mean absolute weight.')
  info.add_argument('input', help='a converted .npz')
  return parser


def main(argv=None) -> int:
  """Runs one subcommand; returns the exit status (2 for bad input)."""
  args = _parser().parse_args(argv)

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
