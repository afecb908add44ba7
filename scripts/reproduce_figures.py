#!/usr/bin/env python3
r"""Reproduces the figures of Gatys, Ecker, Bethge, "A Neural Algorithm of
Artistic Style" (arXiv:1508.06576), and the texture figure of their "Texture
Synthesis Using Convolutional Neural Networks" (arXiv:1505.07376).

  python scripts/reproduce_figures.py --figure=3 --content=C --style=S \
      --out=DIR [--config=NAME|PATH] [--config.FIELD=...]

writes DIR/figure3.png (the labelled grid, laid out as in the paper),
DIR/figure3/ (every panel as its own PNG, plus run's grid and manifest) and
DIR/figure3.json (the layout, each panel's settings and run's manifest).
Each figure's panels that share a network are ONE `run.run(config,
members=[...])` call, i.e. one compiled program:

  --figure=1         content reconstructions from conv1_1 .. conv5_1 (one run
                     of 5 members) and style reconstructions from the growing
                     sets conv1_1; +conv2_1; ... +conv5_1 (another run of 5);
                     2 rows x 5 columns. --content=C --style=S.
  --figure=2         one content image in five styles, alpha/beta = 1e-3 for
                     B, C, D and 1e-4 for E, F; panel A is the content.
                     --content=C --style=SB,SC,SD,SE,SF (five, in that order).
  --figure=3         5 rows (style layers conv1_1; +conv2_1; ... +conv5_1) x
                     4 columns (alpha/beta = 1e-5, 1e-4, 1e-3, 1e-2): one run
                     of 20 members. --content=C --style=S.
  --figure=textures  texture synthesis (style loss only, from noise) on the
                     growing sets conv1_1; +pool1; ... +pool4, beside the
                     source texture. --style=T.

The figure decides the layers, layer masks and loss weights; everything else
(image_size, iterations, weights, optimizer, seed, ...) comes from the config,
by default configs/paper_default.py (--config=paper_default: the paper's
losses and settings). Without --content/--style the built-in images
(builtin:scene, builtin:painting) make a smoke run, e.g. with
--config=paper_smoke or --config.image_size=64 --config.iterations=30
--config.weights=random. --help lists every config field.

Exit status: 0 done, 1 some panel's loss became non-finite (its last finite
image is kept), 2 bad input (one line on stderr, nothing run), 128+signal
when interrupted (the partial panels and manifest of the current run are
saved).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from typing import Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `nst_jax` and `configs` from this checkout.
  sys.path.insert(0, REPO)

from absl import logging  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from nst_jax import cli  # pylint: disable=g-import-not-at-top
from nst_jax.io import grids, images, scenes  # pylint: disable=g-import-not-at-top
from nst_jax.engine import settings as settings_lib  # pylint: disable=g-import-not-at-top
from nst_jax.engine import sweeps  # pylint: disable=g-import-not-at-top
from nst_jax.errors import UserError  # pylint: disable=g-import-not-at-top

FIGURES = ('1', '2', '3', 'textures')
DEFAULT_CONFIG = 'paper_default'  # a shipped config (nst_jax.cli)
BUILTIN_CONTENT = 'builtin:scene'
BUILTIN_STYLE = 'builtin:painting'

PAPER_LAYERS = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')
TEXTURE_LAYERS = ('conv1_1', 'pool1', 'pool2', 'pool3', 'pool4')
# Figure 3's columns: alpha/beta = 10^e.
FIGURE3_EXPONENTS = (-5, -4, -3, -2)
# Figure 2's panels B-F: (letter, alpha/beta exponent, the paper's painting).
FIGURE2_PANELS = (
    ('B', -3, 'J.M.W. Turner, The Shipwreck of the Minotaur'),
    ('C', -3, 'Vincent van Gogh, The Starry Night'),
    ('D', -3, 'Edvard Munch, The Scream'),
    ('E', -4, 'Pablo Picasso, Femme nue assise'),
    ('F', -4, 'Wassily Kandinsky, Composition VII'))
FIGURE2_CONTENT = 'Neckarfront, Tuebingen (photo: Andreas Praefcke)'


# ---------------------------------------------------------------------------
# Layer masks and member lists (pure Python: testable without running).

def growing_masks(count: int) -> list:
  """w_l for the growing layer sets {1}, {1, 2}, ..., {1..count}.

  Set n weights its n layers 1/n each and the rest 0 (the paper's
  w_l = 1/|L|), e.g. count=3: (1, 0, 0), (1/2, 1/2, 0), (1/3, 1/3, 1/3).
  """
  return [tuple(1.0 / n if i < n else 0.0 for i in range(count))
          for n in range(1, count + 1)]


def one_hot_masks(count: int) -> list:
  """One layer at a time: (1, 0, ..., 0), (0, 1, 0, ...), ..."""
  return [tuple(1.0 if i == k else 0.0 for i in range(count))
          for k in range(count)]


def ratio_label(exponent: int) -> str:
  """-3 -> '1e-3' (alpha/beta as the paper prints it)."""
  return f'1e{exponent}'


def growing_labels(layers: Sequence[str]) -> list:
  """('conv1_1', 'pool1', ...) -> ['conv1_1', '+pool1', ...]."""
  return [layers[0]] + ['+' + layer for layer in layers[1:]]


@dataclasses.dataclass
class RunPlan:
  """One `run.run(config, members)` call: one compiled program.

  Attributes:
    name: output stem inside the figure's folder: its members are written to
      <name>_<k>.png, run's own grid to <name>_grid.png, its manifest to
      <name>.json.
    fields: config fields this run sets (layers, inputs).
    members: `run.run` members, one per panel.
    cells: (row, column) of each member's panel in the figure.
  """
  name: str
  fields: dict
  members: list
  cells: list


@dataclasses.dataclass
class FigurePlan:
  """A figure: its grid, the runs that fill it and the input panels."""
  figure: str
  stem: str
  title: str
  rows: int
  columns: int
  row_labels: Optional[list]
  column_labels: Optional[list]
  runs: list
  # (row, column) -> (image path, file name) of panels showing an input.
  input_panels: dict = dataclasses.field(default_factory=dict)
  # (row, column) -> text under the panel (all panels or none).
  labels: dict = dataclasses.field(default_factory=dict)
  # (row, column) -> style image drawn small in the panel's corner.
  insets: dict = dataclasses.field(default_factory=dict)

  def cells(self) -> list:
    return [(r, c) for r in range(self.rows) for c in range(self.columns)]


def figure1_plan(content: str, style: str) -> FigurePlan:
  """Figure 1: what each layer keeps of the content and of the style.

  Row 0: content reconstructions from white noise with the content loss on
  one layer (conv1_1, ..., conv5_1; one-hot layer weights, beta = 0, no style
  layers). Row 1: style reconstructions with the style loss on the growing
  sets conv1_1; +conv2_1; ... (w_l = 1/|L|, alpha = 0, no content layers).
  """
  count = len(PAPER_LAYERS)
  content_run = RunPlan(
      name='content',
      fields={'content': content, 'style': style,
              'content_layers': ','.join(PAPER_LAYERS), 'style_layers': '',
              'style_layer_weights': ''},
      members=[{'content_weight': 1.0, 'style_weight': 0.0,
                'content_layer_weights': mask, 'style_layer_weights': (),
                'label': f'content {layer}'}
               for mask, layer in zip(one_hot_masks(count), PAPER_LAYERS)],
      cells=[(0, c) for c in range(count)])
  style_run = RunPlan(
      name='style',
      fields={'content': content, 'style': style, 'content_layers': '',
              'style_layers': ','.join(PAPER_LAYERS),
              'style_layer_weights': ''},
      members=[{'content_weight': 0.0, 'style_weight': 1.0,
                'content_layer_weights': (), 'style_layer_weights': mask,
                'label': f'style {label}'}
               for mask, label in zip(growing_masks(count),
                                      growing_labels(PAPER_LAYERS))],
      cells=[(1, c) for c in range(count)])
  return FigurePlan(
      figure='1', stem='figure1',
      title='Figure 1: content reconstructions (top) from one layer each; '
            'style reconstructions (bottom) from conv1_1 up to the layer',
      rows=2, columns=count, row_labels=['content', 'style'],
      column_labels=[f'{letter} {layer}' for letter, layer in
                     zip('abcde', PAPER_LAYERS)],
      runs=[content_run, style_run])


def figure2_plan(content: str, styles: Sequence[str]) -> FigurePlan:
  """Figure 2: A the content; B-F in five styles at the paper's ratios.

  One run of five members: member k has the style image styles[k],
  alpha = 1 and beta = 1 / (alpha/beta) (1e3 for B-D, 1e4 for E, F), with the
  config's layers (the paper's: conv4_2; conv1_1 .. conv5_1, w_l = 1/5).
  Laid out as the paper: A B / C D / E F.
  """
  if len(styles) != len(FIGURE2_PANELS):
    raise UserError(f'--style: figure 2 needs {len(FIGURE2_PANELS)} style '
                    'images (panels B-F) separated by commas, got '
                    f'{len(styles)}')
  cell = lambda index: divmod(index, 2)
  members, cells, labels, insets = [], [], {cell(0): 'A: content'}, {}
  for k, ((letter, exponent, _), style) in enumerate(
      zip(FIGURE2_PANELS, styles)):
    members.append({'styles': (style,), 'content_weight': 1.0,
                    'style_weight': 10.0 ** -exponent,
                    'label': f'{letter}: a/b={ratio_label(exponent)}'})
    cells.append(cell(k + 1))
    labels[cell(k + 1)] = members[-1]['label']
    insets[cell(k + 1)] = style
  run = RunPlan(name='panel', fields={'content': content, 'style': styles[0]},
                members=members, cells=cells)
  return FigurePlan(
      figure='2', stem='figure2',
      title='Figure 2: A content; B-F styled, alpha/beta = 1e-3 (B, C, D), '
            '1e-4 (E, F); the style image in the corner',
      rows=3, columns=2, row_labels=None, column_labels=None, runs=[run],
      input_panels={cell(0): (content, 'content.png')}, labels=labels,
      insets=insets)


def figure3_plan(content: str, style: str) -> FigurePlan:
  """Figure 3: style layer sets (rows) x alpha/beta (columns), 20 members.

  Row r uses the style layers conv1_1 .. conv{r+1}_1 with w_l = 1/(r+1) on
  them and 0 on the rest; column c has alpha = 1, beta = 10^(5-c), i.e.
  alpha/beta = 1e-5, 1e-4, 1e-3, 1e-2. Content layer from the config
  (the paper's conv4_2).
  """
  row_labels = growing_labels(PAPER_LAYERS)
  members, cells = [], []
  for r, mask in enumerate(growing_masks(len(PAPER_LAYERS))):
    for c, exponent in enumerate(FIGURE3_EXPONENTS):
      members.append({'content_weight': 1.0,
                      'style_weight': 10.0 ** -exponent,
                      'style_layer_weights': mask,
                      'label': f'{row_labels[r]} {ratio_label(exponent)}'})
      cells.append((r, c))
  run = RunPlan(name='panel',
                fields={'content': content, 'style': style,
                        'style_layers': ','.join(PAPER_LAYERS),
                        'style_layer_weights': ''},
                members=members, cells=cells)
  return FigurePlan(
      figure='3', stem='figure3',
      title='Figure 3: style layers conv1_1 up to the row\'s layer (rows) x '
            'alpha/beta (columns)',
      rows=len(PAPER_LAYERS), columns=len(FIGURE3_EXPONENTS),
      row_labels=row_labels,
      column_labels=[f'a/b={ratio_label(e)}' for e in FIGURE3_EXPONENTS],
      runs=[run])


def textures_plan(texture: str) -> FigurePlan:
  """Texture synthesis: Gram matching on conv1_1; +pool1; ... +pool4.

  Style loss only (alpha = 0, no content layers), from white noise; the
  texture is also the run's content image, which only sets the output's size.
  """
  count = len(TEXTURE_LAYERS)
  labels = growing_labels(TEXTURE_LAYERS)
  run = RunPlan(
      name='panel',
      fields={'content': texture, 'style': texture, 'content_layers': '',
              'style_layers': ','.join(TEXTURE_LAYERS),
              'style_layer_weights': ''},
      members=[{'content_weight': 0.0, 'style_weight': 1.0,
                'content_layer_weights': (), 'style_layer_weights': mask,
                'label': f'texture {label}'}
               for mask, label in zip(growing_masks(count), labels)],
      cells=[(0, c + 1) for c in range(count)])
  return FigurePlan(
      figure='textures', stem='textures',
      title='Textures (Gatys et al. 2015): the source, then Gram matching on '
            'conv1_1 up to the column\'s layer',
      rows=1, columns=count + 1, row_labels=None,
      column_labels=['source'] + labels, runs=[run],
      input_panels={(0, 0): (texture, 'source.png')})


# ---------------------------------------------------------------------------
# Inputs.

def _split(value) -> list:
  return [part.strip() for part in (value or '').split(',') if part.strip()]


def builtin_style_variants(folder: str, size: int, count: int = 5) -> list:
  """Writes `count` colour variants of builtin:painting; returns the paths.

  For a figure 2 smoke run without style images: the built-in painting with
  its colour channels permuted (RGB, GBR, BRG, BGR, RBG), so the five panels
  get five palettes. They are not the paper's paintings.
  """
  orders = ((0, 1, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0), (0, 2, 1))
  base = scenes.demo_style(size)
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as error:
    raise UserError(f'--out: cannot create folder {folder!r}: '
                    f'{error.strerror}') from None
  paths = []
  for k in range(count):
    path = os.path.join(folder, f'builtin_painting_{k}.png')
    images.save_image(path, base[..., list(orders[k % len(orders)])])
    paths.append(path)
  return paths


def resolve_inputs(figure: str, config, content: Optional[str],
                   style: Optional[str], folder: str):
  """The figure's content and style paths: flags, else config, else built-in.

  Returns:
    (content, styles list, notes list).
  Raises:
    UserError: a wrong number of images for the figure.
  """
  notes = []
  styles = _split(style) if style else _split(config.get('style', ''))
  if figure == 'textures':
    if content:
      raise UserError('--content: not used by --figure=textures; give the '
                      'texture as --style=T')
    if len(styles) > 1:
      raise UserError(f'--style: --figure=textures takes one texture, got '
                      f'{len(styles)}')
    if not styles:
      styles = [BUILTIN_STYLE]
      notes.append(f'smoke run: built-in texture {BUILTIN_STYLE}')
    return None, styles, notes
  content = content or config.get('content') or None
  if not content:
    content = BUILTIN_CONTENT
    notes.append(f'smoke run: built-in content image {BUILTIN_CONTENT}')
  if figure == '2':
    if not styles:
      try:
        size = max(1, round(int(config.image_size)
                            * float(config.get('style_scale', 1.0))))
      except (TypeError, ValueError):
        raise UserError('config.image_size, config.style_scale: must be '
                        f'numbers, got {config.image_size!r}, '
                        f'{config.get("style_scale")!r}') from None
      if int(config.image_size) < 1:
        raise UserError('config.image_size: must be > 0, got '
                        f'{config.image_size!r}')
      styles = builtin_style_variants(os.path.join(folder, 'inputs'), size)
      notes.append('smoke run: styles B-F are builtin:painting with its '
                   'colour channels permuted (five palettes), not the '
                   "paper's paintings")
    return content, styles, notes
  if len(styles) > 1:
    raise UserError(f'--style: --figure={figure} takes one style image, got '
                    f'{len(styles)}')
  if not styles:
    styles = [BUILTIN_STYLE]
    notes.append(f'smoke run: built-in style image {BUILTIN_STYLE}')
  return content, styles, notes


def make_plan(figure: str, content: Optional[str],
              styles: Sequence[str]) -> FigurePlan:
  if figure == '1':
    return figure1_plan(content, styles[0])
  if figure == '2':
    return figure2_plan(content, styles)
  if figure == '3':
    return figure3_plan(content, styles[0])
  if figure == 'textures':
    return textures_plan(styles[0])
  raise UserError(f'--figure: unknown {figure!r}; valid are '
                  + ', '.join(FIGURES))


def run_config(config, plan: RunPlan, folder: str):
  """A copy of `config` with the run's fields and output set."""
  config = ml_collections.ConfigDict(config.to_dict()
                                     if hasattr(config, 'to_dict')
                                     else dict(config))
  for field, value in plan.fields.items():
    config[field] = value
  config.output = os.path.join(folder, plan.name + '.png')
  return config


def preflight(plan: FigurePlan, configs: list, figure_outputs: list) -> None:
  """Checks every run's config, members and images before anything runs.

  So a bad second input (figure 1's style) fails before the first run.
  """
  # pylint: disable=g-import-not-at-top
  from nst_jax.engine import inputs as inputs_lib
  from nst_jax.io import manifest as manifest_lib
  outputs = {os.path.realpath(p) for p in figure_outputs}
  for run_plan, config in zip(plan.runs, configs):
    settings = settings_lib.check(config)
    members = sweeps.sweep_members(settings, run_plan.members)
    count = len(members)
    for k in range(count):
      path = manifest_lib.member_output(settings.output, k, count)
      outputs.update({os.path.realpath(path)})
    outputs.update({os.path.realpath(settings.manifest), os.path.realpath(
        manifest_lib.grid_output(settings.output))})
    styles = {p: p for m in members for p in m.styles}
    inputs_lib.read_level(settings, settings.content, styles,
                          settings.image_size)
  inputs = [config.content for config in configs] + [
      p for m in (m for r in plan.runs for m in r.members)
      for p in m.get('styles', ())] + [config.style for config in configs]
  for path in inputs:
    if path and os.path.realpath(path) in outputs:
      raise UserError(f'--out: the figure would overwrite its input {path!r}')


# ---------------------------------------------------------------------------
# The figure.

def _active(layers: Sequence[str], weights) -> list:
  if weights is None:
    return list(layers)
  return [layer for layer, w in zip(layers, weights) if w > 0]


def _panel_record(run_index, member_index, manifest) -> dict:
  """A result panel's settings, from run's manifest."""
  entry = manifest['runs'][member_index]
  config = manifest['config']
  content_layers = _split(config['content_layers'])
  style_layers = _split(config['style_layers'])
  alpha, beta = entry['content_weight'], entry['style_weight']
  return {
      'kind': 'result', 'image': entry['output'], 'run': run_index,
      'member': member_index,
      'content_layers': _active(content_layers,
                                entry['content_layer_weights']),
      'style_layers': _active(style_layers, entry['style_layer_weights']),
      'content_weight': alpha, 'style_weight': beta,
      'ratio': alpha / beta if alpha > 0 and beta > 0 else None,
      'styles': entry['styles'], 'stop_reason': entry['stop_reason'],
      'final_loss': entry['final']['total']}


def with_inset(panel: np.ndarray, style: np.ndarray) -> np.ndarray:
  """The panel with the style image small in its lower left corner."""
  height, width = panel.shape[:2]
  side = max(1, min(height, width) // 3)
  small = images.resize(style, images.fit_longest_side(style.shape[:2], side))
  h, w = small.shape[:2]
  if h + 2 > height or w + 2 > width:
    return panel
  panel = panel.copy()
  panel[height - h - 2:height, 0:w + 2] = 255.0  # white frame
  panel[height - h - 1:height - 1, 1:w + 1] = small
  return panel


def reproduce(figure: str, config, content: Optional[str] = None,
              style: Optional[str] = None, out: str = 'out/figures',
              command: Optional[Sequence[str]] = None) -> dict:
  """Runs one figure and writes DIR/<stem>.png, DIR/<stem>/, DIR/<stem>.json.

  Args:
    figure: '1', '2', '3' or 'textures'.
    config: the base config (`ml_collections.ConfigDict`, e.g.
      configs/paper_default.py's); the figure sets layers and loss weights.
    content, style: image paths (style: several separated by commas for
      figure 2); default the config's, else the built-in images.
    out: the output folder.
    command: the command line, recorded in the JSON.
  Returns:
    The record written to DIR/<stem>.json.
  Raises:
    UserError: bad input (found before anything runs).
    run.Interrupted: SIGINT/SIGTERM during a run (its partial result saved).
  """
  # pylint: disable=g-import-not-at-top
  from nst_jax.engine import inputs as inputs_lib
  from nst_jax.io import manifest as manifest_lib
  from nst_jax import run as run_lib
  started = time.perf_counter()
  figure = str(figure).lower().removeprefix('figure')
  if figure not in FIGURES:
    raise UserError(f'--figure: unknown {figure!r}; valid are '
                    + ', '.join(FIGURES))
  if not out:
    raise UserError('--out: empty; give an output folder')
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f'--out: {out!r} exists and is not a folder')
  stem = 'textures' if figure == 'textures' else f'figure{figure}'
  folder = os.path.join(out, stem)
  content, styles, notes = resolve_inputs(figure, config, content, style,
                                          folder)
  plan = make_plan(figure, content, styles)
  configs = [run_config(config, run_plan, folder) for run_plan in plan.runs]
  figure_png = os.path.join(out, stem + '.png')
  figure_json = os.path.join(out, stem + '.json')
  preflight(plan, configs, [figure_png, figure_json] + [
      os.path.join(folder, name) for _, name in plan.input_panels.values()])
  if config.get('loss_normalization') != 'paper':
    notes.append(
        f"loss_normalization={config.get('loss_normalization')!r}: the "
        "figure's alpha/beta ratios are the paper's for 'paper' losses and "
        'mean something else here (see nst_jax/core/losses.py)')

  manifests = []
  for index, (run_plan, run_cfg) in enumerate(zip(plan.runs, configs)):
    logging.info('figure %s: run %d/%d (%s), %d members as one program',
                 figure, index + 1, len(plan.runs), run_plan.name,
                 len(run_plan.members))
    manifests.append(run_lib.run(run_cfg, members=run_plan.members))

  panels = {}
  for run_index, (run_plan, manifest) in enumerate(zip(plan.runs,
                                                       manifests)):
    for member_index, cell in enumerate(run_plan.cells):
      panels[cell] = _panel_record(run_index, member_index, manifest)
  size = int(config.image_size)
  for cell, (path, name) in plan.input_panels.items():
    pixels = inputs_lib.read_image(path, size, 'input image')
    saved = os.path.join(folder, name)
    images.save_image(saved, pixels)
    panels[cell] = {'kind': 'input', 'image': saved, 'source': path}

  pictures, labels = [], []
  inset_pixels = {}
  for cell in plan.cells():
    panel = panels[cell]
    panel.update(row=cell[0], column=cell[1],
                 label=plan.labels.get(cell) or _cell_label(plan, cell))
    pixels = images.load_image(panel['image'])
    if cell in plan.insets:
      path = plan.insets[cell]
      if path not in inset_pixels:
        inset_pixels[path] = inputs_lib.read_image(path, size, 'style image')
      pixels = with_inset(pixels, inset_pixels[path])
    pictures.append(pixels)
    labels.append(plan.labels.get(cell, ''))
  grid = grids.make_grid(pictures, labels=labels if plan.labels else None,
                         columns=plan.columns, row_labels=plan.row_labels,
                         column_labels=plan.column_labels)
  images.save_image(figure_png, grid)

  random_weights = any(m['weights'].get('random') for m in manifests)
  if random_weights:
    notes.append('RANDOM, UNTRAINED VGG19 WEIGHTS: not the paper\'s results')
  record = {
      'figure': figure, 'title': plan.title,
      'paper': ('Gatys, Ecker, Bethge, Texture Synthesis Using Convolutional '
                'Neural Networks, arXiv:1505.07376' if figure == 'textures'
                else 'Gatys, Ecker, Bethge, A Neural Algorithm of Artistic '
                'Style, arXiv:1508.06576'),
      'command': shlex.join(command) if command else None,
      'image': figure_png, 'folder': folder,
      'inputs': {'content': content, 'styles': list(styles)},
      'smoke': bool(random_weights or any(n.startswith('smoke run')
                                          for n in notes)),
      'notes': notes,
      'layout': {'rows': plan.rows, 'columns': plan.columns,
                 'row_labels': plan.row_labels,
                 'column_labels': plan.column_labels,
                 'panels': [panels[cell] for cell in plan.cells()]},
      'programs': len(manifests),
      'manifests': manifests,
      'timing': {'total_s': time.perf_counter() - started},
  }
  if figure == '2':
    record['works'] = {'A': FIGURE2_CONTENT, **{
        letter: work for letter, _, work in FIGURE2_PANELS}}
  manifest_lib.write_json(figure_json, record)
  return record


def _cell_label(plan: FigurePlan, cell) -> str:
  parts = []
  if plan.row_labels:
    parts.append(plan.row_labels[cell[0]])
  if plan.column_labels:
    parts.append(plan.column_labels[cell[1]])
  return ' '.join(parts)


def non_finite_panels(record: dict) -> list:
  return [p for p in record['layout']['panels']
          if p.get('stop_reason') == 'non_finite']


# ---------------------------------------------------------------------------
# Command line.

def _define_flags():
  """The flags besides --config (nst_jax.cli adds it when parsing), defined
  only when run as a script, so that tests can import this file."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('figure', None, 'Which figure: ' + ', '.join(FIGURES))
  flags.DEFINE_string('content', None, 'Content image (default: the '
                      "config's, else builtin:scene).")
  flags.DEFINE_string('style', None, 'Style image; figure 2: five, '
                      'separated by commas; textures: the texture.')
  flags.DEFINE_string('out', 'out/figures', 'Output folder.')
  cli.define_debug_flag()
  flags.mark_flag_as_required('figure')
  return flags.FLAGS


def main(argv, flag_values) -> int:
  """Reproduces the figure the parsed flags ask for.

  Args:
    argv: what the flags parser left: the program name only.
    flag_values: the parsed flags, `config` included.
  Returns:
    The exit status.
  """
  del argv  # cli.parse_flags refuses positional arguments
  from nst_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  try:
    record = reproduce(flag_values.figure, flag_values.config,
                       content=flag_values.content, style=flag_values.style,
                       out=flag_values.out,
                       command=['python'] + sys.argv)
  except (UserError, run_lib.Interrupted) as error:
    return cli.report(error, debug=flag_values.debug)
  bad = non_finite_panels(record)
  if bad:
    print(f'error: the loss became non-finite in {len(bad)} panel(s) (kept '
          'their last finite images): '
          + ', '.join(f'row {p["row"]} column {p["column"]}' for p in bad),
          file=sys.stderr)
    return 1
  stem = os.path.splitext(record['image'])[0]
  print(f'wrote {record["image"]} ({len(record["layout"]["panels"])} '
        f'panels in {record["folder"]}, record {stem}.json)')
  for note in record['notes']:
    print(f'note: {note}')
  return 0


def entry_point():
  flag_values = _define_flags()
  cli.run(lambda argv: main(argv, flag_values),
          prog='python scripts/reproduce_figures.py', about=__doc__,
          default_config=DEFAULT_CONFIG,
          own_flags=['figure', 'content', 'style', 'out', 'debug'],
          flag_values=flag_values)


if __name__ == '__main__':
  entry_point()
