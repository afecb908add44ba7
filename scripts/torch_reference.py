"""A plain PyTorch implementation of Gatys et al.'s loss, for benchmarks.

The same network and losses as nst_jax with `LossSpec(normalization=...,
pooling='avg', preprocessing=...)`:

* VGG19's convolutions up to conv5_1 (3x3, padding 1, ReLU), 2x2 average
  pooling between blocks, float32, NCHW;
* content loss on conv4_2: 1/2 sum (F - P)^2 ('paper') or 1/2 mean (F - P)^2
  ('invariant');
* style loss sum_l w_l E_l, G = F F^T, w_l = 1/5 on conv1_1 ... conv5_1, with
  E_l = sum (G - A)^2 / (4 N_l^2 M_l^2) ('paper') or
  E_l = sum (G / M_l - A / M_l^style)^2 / (4 N_l^2) ('invariant');
* total alpha * content + beta * style;
* preprocessing 'caffe' (Keras's layout: RGB 0-255 -> BGR minus the ImageNet
  mean) or 'torchvision' (RGB / 255, minus the ImageNet mean, divided by its
  std).

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
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
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
    normalization: 'paper' or 'invariant' (nst_jax's `loss_normalization`).
    preprocessing: 'caffe' or 'torchvision' (what the weights' layout
      expects).
    device: where the network and targets live ('cpu', 'cuda').
  """

  def __init__(self, params, content, style, alpha=1.0, beta=1e3,
               normalization='paper', preprocessing='caffe', device='cpu'):
    self.device = torch.device(device)
    if normalization not in ('paper', 'invariant'):
      raise ValueError(f'unknown normalization {normalization!r}')
    if preprocessing not in ('caffe', 'torchvision'):
      raise ValueError(f'unknown preprocessing {preprocessing!r}')
    self.normalization, self.preprocessing = normalization, preprocessing
    self.convs = []
    for name in CONV_LAYERS:
      kernel = np.transpose(np.asarray(params[name]['kernel'], np.float32),
                            (3, 2, 0, 1))  # HWIO -> OIHW
      self.convs.append((
          name, torch.from_numpy(np.ascontiguousarray(kernel)).to(self.device),
          torch.from_numpy(np.asarray(params[name]['bias'],
                                      np.float32)).to(self.device)))
    as_nchw = lambda v: torch.tensor(v, dtype=torch.float32,
                                     device=self.device).view(1, 3, 1, 1)
    self.mean = as_nchw(CAFFE_MEAN_BGR if preprocessing == 'caffe'
                        else TORCHVISION_MEAN)
    self.std = as_nchw(TORCHVISION_STD)
    self.alpha, self.beta = float(alpha), float(beta)
    with torch.no_grad():
      self.target_content = self.features(
          to_nchw(content).to(self.device))[CONTENT_LAYER]
      self.target_grams = {l: self.gram(f) / self.positions(f)
                           for l, f in self.features(
                               to_nchw(style).to(self.device)).items()
                           if l in STYLE_LAYERS}

  def features(self, pixels):
    """Rectified responses of every conv layer up to conv5_1."""
    if self.preprocessing == 'caffe':
      x = pixels.flip(1) - self.mean  # RGB -> BGR, minus the mean
    else:
      x = (pixels / 255.0 - self.mean) / self.std
    out = {}
    for name, kernel, bias in self.convs:
      if name.endswith('_1') and name != 'conv1_1':
        x = F.avg_pool2d(x, 2)
      x = torch.relu(F.conv2d(x, kernel, bias, padding=1))
      out[name] = x
    return out

  def positions(self, features):
    """1, or M_l when invariant (Gram matrices divided by their positions)."""
    return (features.shape[2] * features.shape[3]
            if self.normalization == 'invariant' else 1)

  @staticmethod
  def gram(features):
    flat = features[0].flatten(1)  # (N, M)
    return flat @ flat.t()

  def terms(self, pixels):
    f = self.features(pixels)
    squared = (f[CONTENT_LAYER] - self.target_content) ** 2
    invariant = self.normalization == 'invariant'
    content = 0.5 * (squared.mean() if invariant else squared.sum())
    style = 0.0
    for l in STYLE_LAYERS:
      n, m = f[l].shape[1], f[l].shape[2] * f[l].shape[3]
      error = ((self.gram(f[l]) / self.positions(f[l])
                - self.target_grams[l]) ** 2).sum()
      style = style + error / (4.0 * n * n * (1 if invariant else m * m)) / (
          len(STYLE_LAYERS))
    return content, style

  def __call__(self, pixels):
    content, style = self.terms(pixels)
    return self.alpha * content + self.beta * style


def evaluation(params, content, style, repeats, threads, **loss_kwargs):
  """Median seconds of one loss + pixel-gradient evaluation at `content`'s
  size, after one warm-up; also the loss and gradient norm at `content` (to
  check both implementations compute the same function). `loss_kwargs`:
  `Gatys`'s alpha, beta, normalization and preprocessing."""
  torch.set_num_threads(threads)
  loss = Gatys(params, content, style, **loss_kwargs)
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


def lbfgs(params, content, style, evaluations, threads, history_size=100,
          timed_evaluations=0, **loss_kwargs):
  """torch.optim.LBFGS(lr=1, history_size=100, no line search) from the
  content image for `evaluations` function evaluations (`loss_kwargs`:
  `Gatys`'s alpha, beta, normalization and preprocessing).

  Returns:
    {'seconds', 'final_loss', 'start_loss', 'evaluations', 'curve':
    [(evaluation, seconds since start, loss), ...]} (the curve has the loss
    *before* each step); with `timed_evaluations`, also 'evaluation_s': the
    median of that many single evaluations timed right after the run.
  """
  torch.set_num_threads(threads)
  loss = Gatys(params, content, style, **loss_kwargs)
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
  result = {'seconds': seconds, 'final_loss': final,
            'start_loss': curve[0][2], 'evaluations': len(curve),
            'history_size': history_size,
            'threads': torch.get_num_threads(), 'curve': list(curve)}
  if timed_evaluations:
    times = []
    for _ in range(timed_evaluations):
      begin = time.perf_counter()
      closure()
      times.append(time.perf_counter() - begin)
    result['evaluation_s'] = float(np.median(times))
  return result
