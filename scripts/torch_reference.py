"""A plain PyTorch implementation of Gatys et al.'s loss, for benchmarks.

The same network and losses as nst_jax with `LossSpec(normalization='paper',
pooling='avg', preprocessing='caffe')`:

* VGG19's convolutions up to conv5_1 (3x3, padding 1, ReLU), 2x2 average
  pooling between blocks, float32, NCHW;
* content loss 1/2 sum (F - P)^2 on conv4_2;
* style loss sum_l w_l E_l with E_l = sum (G - A)^2 / (4 N_l^2 M_l^2),
  G = F F^T, w_l = 1/5 on conv1_1 ... conv5_1;
* total alpha * content + beta * style;
* Caffe preprocessing: RGB 0-255 -> BGR minus the ImageNet mean.

Weights come from NumPy HWIO kernels (nst_jax's layout) transposed to OIHW,
so both implementations evaluate exactly the same function.

Only imported when torch is installed (`pip install torch==2.13.0`, the
`bench` extra); `scripts/benchmark.py` runs these functions in their own
process so PyTorch's and XLA's thread pools don't compete for the cores.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CONV_LAYERS = ('conv1_1', 'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1',
               'conv3_2', 'conv3_3', 'conv3_4', 'conv4_1', 'conv4_2',
               'conv4_3', 'conv4_4', 'conv5_1')
STYLE_LAYERS = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')
CONTENT_LAYER = 'conv4_2'


def to_nchw(pixels: np.ndarray) -> torch.Tensor:
  """(H, W, 3) float array -> (1, 3, H, W) float32 tensor."""
  return torch.from_numpy(np.ascontiguousarray(
      np.transpose(np.asarray(pixels, np.float32), (2, 0, 1))[None]))


class Gatys:
  """The loss of one content and one style image; call it on (1, 3, H, W).

  Args:
    params: {'conv1_1': {'kernel': (3, 3, Cin, Cout) HWIO, 'bias': (Cout,)},
      ...} NumPy float32 (nst_jax's layout, e.g. `weights.random_weights`).
    content: (H, W, 3) RGB 0-255.
    style: (H', W', 3) RGB 0-255.
    alpha, beta: content and style weights.
  """

  def __init__(self, params, content, style, alpha=1.0, beta=1e3):
    self.convs = []
    for name in CONV_LAYERS:
      kernel = np.transpose(np.asarray(params[name]['kernel'], np.float32),
                            (3, 2, 0, 1))  # HWIO -> OIHW
      self.convs.append((name, torch.from_numpy(np.ascontiguousarray(kernel)),
                         torch.from_numpy(np.asarray(params[name]['bias'],
                                                     np.float32))))
    self.mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(
        1, 3, 1, 1)
    self.alpha, self.beta = float(alpha), float(beta)
    with torch.no_grad():
      self.target_content = self.features(to_nchw(content))[CONTENT_LAYER]
      self.target_grams = {l: self.gram(f) for l, f in
                           self.features(to_nchw(style)).items()
                           if l in STYLE_LAYERS}

  def features(self, pixels):
    """Rectified responses of every conv layer up to conv5_1."""
    x = pixels.flip(1) - self.mean  # RGB -> BGR, minus the mean
    out = {}
    for name, kernel, bias in self.convs:
      if name.endswith('_1') and name != 'conv1_1':
        x = F.avg_pool2d(x, 2)
      x = torch.relu(F.conv2d(x, kernel, bias, padding=1))
      out[name] = x
    return out

  @staticmethod
  def gram(features):
    flat = features[0].flatten(1)  # (N, M)
    return flat @ flat.t()

  def terms(self, pixels):
    f = self.features(pixels)
    content = 0.5 * ((f[CONTENT_LAYER] - self.target_content) ** 2).sum()
    style = 0.0
    for l in STYLE_LAYERS:
      n, m = f[l].shape[1], f[l].shape[2] * f[l].shape[3]
      style = style + ((self.gram(f[l]) - self.target_grams[l]) ** 2).sum() / (
          4.0 * n * n * m * m) / len(STYLE_LAYERS)
    return content, style

  def __call__(self, pixels):
    content, style = self.terms(pixels)
    return self.alpha * content + self.beta * style


def evaluation(params, content, style, repeats, threads):
  """Median seconds of one loss + pixel-gradient evaluation at `content`'s
  size, after one warm-up; also the loss and gradient norm at `content` (to
  check both implementations compute the same function)."""
  torch.set_num_threads(threads)
  loss = Gatys(params, content, style)
  pixels = to_nchw(content).requires_grad_(True)

  def once():
    pixels.grad = None
    value = loss(pixels)
    value.backward()
    return value

  value = once()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    once()
    times.append(time.perf_counter() - start)
  return {'evaluation_s': float(np.median(times)), 'times_s': times,
          'loss': float(value), 'grad_norm': float(pixels.grad.norm()),
          'threads': torch.get_num_threads(), 'torch': torch.__version__}


def lbfgs(params, content, style, evaluations, threads, history_size=100):
  """torch.optim.LBFGS(lr=1, history_size=100, no line search) from the
  content image for `evaluations` function evaluations.

  Returns:
    {'seconds', 'final_loss', 'evaluations', 'curve': [(evaluation, seconds
    since start, loss), ...]} (the curve has the loss *before* each step).
  """
  torch.set_num_threads(threads)
  loss = Gatys(params, content, style)
  x = to_nchw(content).requires_grad_(True)
  optimizer = torch.optim.LBFGS(
      [x], lr=1, history_size=history_size, max_iter=evaluations,
      max_eval=evaluations, tolerance_grad=0.0, tolerance_change=0.0,
      line_search_fn=None)
  curve = []
  start = time.perf_counter()

  def closure():
    optimizer.zero_grad()
    value = loss(x)
    value.backward()
    curve.append((len(curve) + 1, time.perf_counter() - start, float(value)))
    return value

  optimizer.step(closure)
  seconds = time.perf_counter() - start
  with torch.no_grad():
    final = float(loss(x))
  return {'seconds': seconds, 'final_loss': final, 'evaluations': len(curve),
          'history_size': history_size, 'threads': torch.get_num_threads(),
          'curve': curve}
