"""Download the Keras VGG19 notop weights, check the MD5, convert."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request

from nst_jax.errors import UserError
from nst_jax.weights.fileformat import save_weights
from nst_jax.weights.keras import convert_keras

KERAS_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/'
             'vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5')
KERAS_MD5 = '253f8cb515780f3b799900260a226db6'
DEFAULT_OUTPUT = os.path.join('weights', 'vgg19_keras.npz')


def fetch(out_path: str = DEFAULT_OUTPUT, url: str = KERAS_URL,
          md5: str = KERAS_MD5, timeout: float = 60.0, log=print) -> str:
  """Downloads, verifies and converts the Keras weights to `out_path`.

  Nothing half-written is ever left: the download goes to a temporary file
  beside the output, which is removed on any failure (including Ctrl-C), and
  the converted file is renamed into place only when complete.

  Args:
    out_path: the converted `.npz` to write.
    url: where to download from.
    md5: expected MD5 of the downloaded file.
    timeout: seconds for the connection.
    log: progress messages.
  Returns:
    out_path.
  Raises:
    UserError: network failure, HTTP error, or checksum mismatch.
  """
  folder = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(folder, exist_ok=True)
  handle, tmp = tempfile.mkstemp(dir=folder, prefix='.download-',
                                 suffix='.h5')
  try:
    digest = hashlib.md5()
    log(f'downloading {url}')
    try:
      with urllib.request.urlopen(url, timeout=timeout) as response, \
          os.fdopen(handle, 'wb') as f:
        for block in iter(lambda: response.read(1 << 20), b''):
          digest.update(block)
          f.write(block)
    except urllib.error.HTTPError as error:
      raise UserError(f'download {url}: HTTP {error.code} {error.reason}'
                      ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as error:
      reason = getattr(error, 'reason', error)
      raise UserError(f'download {url}: {reason}') from None
    if digest.hexdigest() != md5:
      raise UserError(f'download {url}: MD5 {digest.hexdigest()} does not '
                      f'match the expected {md5}')
    params, meta = convert_keras(tmp)
    meta['source_file'] = os.path.basename(url)
    save_weights(out_path, params, meta)
    log(f'wrote {out_path}')
    return out_path
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
