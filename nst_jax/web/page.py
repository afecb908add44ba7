"""The Gradio page of `nst-jax serve`.

`build(config, folder)` lays out the page: the uploads (or the built-in
scene and painting), the main controls, an "advanced" panel generated from
configs/default.py's documented fields, a sweep panel and a video panel; a
**Stylize** button that queues a run (one at a time on the device) and a
**Cancel** button that stops it between compiled chunks, keeping what it
reached. While a run goes the page shows the image as it forms (every
`log_every` steps), the step, the loss terms, a loss plot, the rate and the
time left; when it ends, downloads of its files and a gallery of this
tab's results. Each browser tab has its own uploads, runs and results
(Gradio tells them apart by a hash per page load).
"""

from __future__ import annotations

import math
import os
import threading

import gradio as gr
from ml_collections import config_dict

import nst_jax
from nst_jax.errors import UserError
from nst_jax.io import images as images_lib, scenes
from nst_jax.web import jobs

STYLE_WEIGHT_RANGE = (-8.0, 4.0)  # the slider's log10 range
BUILTIN_SIZE = 256  # the built-in images' preview size
# The main controls but the style weight's slider, a row each.
MAIN_ROWS = (('image_size', 'iterations', 'seed'),
             ('optimizer', 'init', 'color_control'),
             ('style_loss', 'padding'),
             ('style_scale', 'coarse_to_fine'))
# Small results are shown scaled up, pixels kept sharp.
CSS = '''
#nst-live img {width: 100%; height: 100%; object-fit: contain;
               image-rendering: pixelated;}
'''


def _file(payload):
  """An upload's `jobs.Upload`: the file as received (None: none)."""
  if payload is None or not payload.path:
    return None
  return jobs.Upload(payload.path, payload.orig_name or 'upload')


def _files(payload):
  """A gallery's uploads, each a `jobs.Upload`."""
  if payload is None or not payload.root:
    return []
  return [_file(getattr(element, 'image', None) or element.video)
          for element in payload.root]


def received(component, convert=_file):
  """`component` handing the run its uploads as received, undecoded: the
  page checks them with the command line's readers, so that a bad file gets
  the same one-line message rather than Gradio's decoding error. (The
  instance's preprocess is replaced rather than subclassed: Gradio writes a
  type-stub file beside the source of every Component subclass.)"""
  component.preprocess = convert
  return component


def style_weight_to_slider(weight: float) -> float:
  """The slider's position (log10) for a style weight."""
  low, high = STYLE_WEIGHT_RANGE
  return min(max(math.log10(weight), low), high) if weight > 0 else low


def slider_to_style_weight(position: float) -> float:
  """The style weight at a slider position: 10^position to 4 significant
  figures (the slider's own resolution), so that 1e-3 stays 0.001."""
  return float(f'{10.0 ** float(position):.4g}')


class Page:
  """The page's state on the server: the base config, the queue's cancel
  flags (one per browser tab) and the results' folder."""

  def __init__(self, config: config_dict.ConfigDict, folder: str):
    self.config = config
    self.folder = folder
    self.runs_folder = os.path.join(folder, 'runs')
    self.store = jobs.ResultStore(os.path.join(folder, 'results'))
    self.upload_roots = [os.environ.get('GRADIO_TEMP_DIR') or
                         gr.utils.get_upload_folder(), folder]
    self._cancel = {}
    self._lock = threading.Lock()
    builtin = os.path.join(folder, 'builtin')
    os.makedirs(builtin, exist_ok=True)
    self.builtin_scene = os.path.join(builtin, 'scene.png')
    self.builtin_painting = os.path.join(builtin, 'painting.png')
    images_lib.save_image(self.builtin_scene,
                          scenes.demo_content(BUILTIN_SIZE))
    images_lib.save_image(self.builtin_painting,
                          scenes.demo_style(BUILTIN_SIZE))
    self.random_weights = str(config.weights) == 'random'

  def cancel_flag(self, tab: str) -> threading.Event:
    with self._lock:
      return self._cancel.setdefault(tab, threading.Event())


def _control(spec: jobs.Field, **kwargs):
  """A Gradio control for a documented field."""
  label = spec.path
  info = spec.meaning or None
  if spec.kind == 'bool':
    return gr.Checkbox(value=spec.default, label=label, info=info, **kwargs)
  if spec.kind == 'choice':
    return gr.Dropdown(choices=list(spec.choices), value=spec.default,
                       label=label, info=info, **kwargs)
  if spec.kind == 'int':
    return gr.Number(value=spec.default, precision=0, label=label, info=info,
                     **kwargs)
  if spec.kind == 'float':
    default = spec.default
    if isinstance(default, float) and not math.isfinite(default):
      # gr.Number cannot hold an infinity: the text box can.
      return gr.Textbox(value=repr(default), label=label, info=info,
                        **kwargs)
    return gr.Number(value=default, label=label, info=info, **kwargs)
  return gr.Textbox(value=str(spec.default) if spec.kind != 'tuple'
                    else repr(spec.default), label=label, info=info,
                    **kwargs)


def _elem(name: str) -> str:
  return f'nst-{name}'


def build(config: config_dict.ConfigDict, folder: str) -> gr.Blocks:
  """The page, its controls starting from `config` (the server's).

  Args:
    config: the server's config: the `--config` flags of `nst-jax serve`.
    folder: the server's private temporary folder (runs and results).
  Returns:
    The gr.Blocks, to `queue()` and `launch()`.
  """
  page = Page(config, folder)
  main_specs = [jobs.field(config, name) for name in jobs.MAIN_FIELDS]
  advanced_specs = jobs.advanced_fields(config)
  video_specs = jobs.advanced_fields(config, video=True)
  controls = {}
  notice = ('**Random weights**: this server uses RANDOM, UNTRAINED VGG19 '
            'weights, so results are textures, not a style transfer of '
            'trained features.' if page.random_weights else '')

  with gr.Blocks(title='nst_jax', analytics_enabled=False,
                 delete_cache=(3600, 24 * 3600)) as blocks:
    gr.Markdown('## nst_jax: neural style transfer (Gatys, Ecker, Bethge)\n'
                + notice)
    builtin_content = gr.State(False)
    builtin_styles = gr.State(False)
    entries = gr.State([])
    last_sweep = gr.State(None)
    with gr.Row():
      with gr.Column(scale=2):
        with gr.Row():
          with gr.Column():
            content = received(gr.Image(label='Content image', type='filepath',
                                  sources=['upload', 'clipboard'],
                                  elem_id=_elem('content'), height=220))
            scene_button = gr.Button('Built-in scene', size='sm')
          with gr.Column():
            styles = received(gr.Gallery(
                label='Style image(s)', type='filepath', interactive=True,
                columns=3, height=220, elem_id=_elem('styles')), _files)
            painting_button = gr.Button('Built-in painting', size='sm')
        with gr.Row():
          stylize_button = gr.Button('Stylize', variant='primary',
                                     elem_id=_elem('stylize'))
          cancel_button = gr.Button('Cancel', variant='stop',
                                    elem_id=_elem('cancel'))
        by_name = {spec.path: spec for spec in main_specs}
        weight = by_name['style_weight']
        controls['style_weight'] = gr.Slider(
            *STYLE_WEIGHT_RANGE, step=0.01,
            value=style_weight_to_slider(weight.default),
            label='style weight (log10)', elem_id=_elem('style_weight'),
            info=f'{weight.meaning}; now {weight.default:g}')
        for row in MAIN_ROWS:
          with gr.Row():
            for name in row:
              controls[name] = _control(by_name[name], elem_id=_elem(name),
                                        min_width=120)
        with gr.Accordion('Advanced', open=False):
          section = None
          for spec in advanced_specs:
            if spec.section != section:
              section = spec.section
              gr.Markdown(f'**{section}**')
            controls[spec.path] = _control(spec, elem_id=_elem(spec.path))
          content_masks = received(gr.Gallery(
              label='content_masks: one mask per style (regions)',
              type='filepath', interactive=True, columns=4, height=120,
              elem_id=_elem('content_masks')), _files)
          style_masks = received(gr.Gallery(
              label='style_masks: the part of each style image to use',
              type='filepath', interactive=True, columns=4, height=120,
              elem_id=_elem('style_masks')), _files)
          init_image = received(gr.Image(
              label="init_image (for init='image')", type='filepath',
              height=120, elem_id=_elem('init_image')))
        with gr.Accordion('Sweep', open=False):
          sweep_field = gr.Dropdown(choices=list(jobs.SWEEP_FIELDS),
                                    value='style_weight',
                                    label='field to sweep',
                                    elem_id=_elem('sweep_field'))
          sweep_text = gr.Textbox(
              label='values (empty: no sweep)', placeholder='1e-4, 1e-3, 1e-2',
              elem_id=_elem('sweep_values'))
        with gr.Accordion('Video', open=False):
          clip_upload = received(gr.Video(
              label='Content clip (replaces the content image)',
              sources=['upload'], elem_id=_elem('video'), height=200))
          for spec in video_specs:
            controls[spec.path] = _control(spec, elem_id=_elem(spec.path))
      with gr.Column(scale=3):
        status = gr.Markdown('Upload a content and a style image (or pick '
                             'the built-in ones), then press **Stylize**.',
                             elem_id=_elem('status'))
        live = gr.Image(label='Result', interactive=False, format='png',
                        elem_id=_elem('live'), height=360)
        grid = gr.Gallery(label='Sweep: click a panel to see it large and '
                          'use its settings', columns=4, visible=False,
                          elem_id=_elem('grid'), allow_preview=False,
                          fit_columns=False)
        frames = gr.Gallery(label='Frames', columns=6, visible=False,
                            elem_id=_elem('frames'), height=200,
                            fit_columns=False)
        clip_player = gr.Video(label='Stylised clip', visible=False,
                               interactive=False, elem_id=_elem('clip'))
        plot = gr.Image(label='Loss', interactive=False, format='png',
                        elem_id=_elem('plot'), height=170)
        downloads = gr.File(label='Downloads', file_count='multiple',
                            interactive=False, elem_id=_elem('downloads'))
        gallery = gr.Gallery(label="This tab's results", columns=4,
                             elem_id=_elem('gallery'), height=300,
                             object_fit='contain', fit_columns=False)

    # -- Built-in images and uploads ------------------------------------
    scene_button.click(lambda: (page.builtin_scene, True),
                       outputs=[content, builtin_content], queue=False)
    painting_button.click(lambda: ([page.builtin_painting], True),
                          outputs=[styles, builtin_styles], queue=False)
    content.upload(lambda: False, outputs=builtin_content, queue=False)
    content.clear(lambda: False, outputs=builtin_content, queue=False)
    styles.upload(lambda: False, outputs=builtin_styles, queue=False)
    style_slider = controls['style_weight']
    style_slider.release(
        lambda x: gr.update(info=f'now {slider_to_style_weight(x):g}'),
        inputs=style_slider, outputs=style_slider, queue=False)

    # -- A run ----------------------------------------------------------
    ordered = list(controls)
    run_inputs = [content, builtin_content, styles, builtin_styles,
                  content_masks, style_masks, init_image, clip_upload,
                  sweep_field, sweep_text, entries] + [
                      controls[path] for path in ordered]
    run_outputs = [status, live, grid, frames, clip_player, plot, downloads,
                   gallery, entries, last_sweep]

    def arm(request: gr.Request):
      page.cancel_flag(request.session_hash).clear()
      return 'Waiting for the device…'

    def cancel(request: gr.Request):
      page.cancel_flag(request.session_hash).set()
      return 'Cancelling: the run stops at its next chunk and keeps its image…'

    def run(request: gr.Request, *args):
      (content_value, content_is_builtin, style_values, styles_are_builtin,
       content_mask_values, style_mask_values, init_value, clip_value,
       sweep_name, sweep_values_text, entry_list) = args[:11]
      values = dict(zip(ordered, args[11:]))
      yield from _run(page, request.session_hash, values,
                      content_value, content_is_builtin, style_values,
                      styles_are_builtin, content_mask_values,
                      style_mask_values, init_value, clip_value, sweep_name,
                      sweep_values_text, list(entry_list or []),
                      run_outputs)

    stylize_button.click(arm, outputs=status, queue=False).then(
        run, inputs=run_inputs, outputs=run_outputs,
        concurrency_limit=1, concurrency_id='device',
        show_progress='minimal')
    cancel_button.click(cancel, outputs=status, queue=False)

    # -- A sweep's panel: see it large, use its settings ----------------
    def pick(sweep, evt: gr.SelectData):
      if not sweep:
        return {}
      k = evt.index
      name, values, panel_images = sweep
      value = values[k]
      updates = {live: panel_images[k],
                 status: f'Panel {k + 1}: {name}={value:g}; its setting is '
                         'now in the controls.'}
      if name == 'style_weight':
        updates[controls[name]] = style_weight_to_slider(value)
      else:
        updates[controls[name]] = value
      return updates

    grid.select(pick, inputs=last_sweep,
                outputs=[live, status] + [controls[name]
                                          for name in jobs.SWEEP_FIELDS],
                queue=False)
  return blocks


def _run(page: Page, tab: str, values: dict, content, content_is_builtin,
         styles, styles_are_builtin, content_masks, style_masks, init_value,
         clip_upload, sweep_name, sweep_text, entry_list, outputs):
  """The generator behind **Stylize**: yields the page's updates."""
  (status, live, grid, frames, clip_player, plot, downloads, gallery,
   entries, last_sweep) = outputs
  cancel = page.cancel_flag(tab)
  if cancel.is_set():
    cancel.clear()
    yield {status: 'Cancelled before it started.'}
    return
  folder = jobs.RunFolder(page.runs_folder, page.upload_roots)
  try:
    try:
      values = dict(values)
      values['style_weight'] = slider_to_style_weight(values['style_weight'])
      is_clip = clip_upload is not None
      config = jobs.config_for(page.config, values)
      if not is_clip:
        jobs.refuse_video_fields(config, page.config)
      sweep = None
      if sweep_text and sweep_text.strip():
        if is_clip:
          raise UserError('sweep: a clip runs one setting; clear the sweep '
                          'values or the clip')
        sweep = (sweep_name, jobs.sweep_values(sweep_name, sweep_text))
        config.sweep[sweep_name] = sweep[1]
      if styles_are_builtin:
        style_sources = ['builtin:painting']
      else:
        style_sources = [folder.take(u, 'style image') for u in styles or []]
      if not style_sources:
        raise UserError('style: upload a style image (or press Built-in '
                        'painting)')
      fields = {}
      for name, uploads in (('content_masks', content_masks),
                            ('style_masks', style_masks)):
        if uploads:
          fields[name] = [folder.take(u, name) for u in uploads]
      if init_value is not None:
        config.init_image = folder.take(init_value, 'init_image')
      settings_text = jobs.describe_settings(config, page.config)
      if is_clip:
        if fields:
          raise UserError('content_masks: not with a video content')
        yield from _run_clip(page, tab, config, folder,
                             folder.take(clip_upload, 'content clip'),
                             style_sources, cancel, settings_text,
                             entry_list, outputs)
        return
      if content_is_builtin:
        content_source = 'builtin:scene'
      elif content is not None:
        content_source = folder.take(content, 'content image')
      else:
        raise UserError('content: upload a content image (or press '
                        'Built-in scene)')
      yield from _run_still(page, tab, config, content_source,
                            style_sources, fields, sweep, cancel,
                            settings_text, entry_list, outputs)
    except UserError as error:
      yield {status: f'error: {folder.message(error)}'}
  finally:
    folder.remove()


def _raise_failure(done: jobs.Done) -> None:
  """Raises what ended a job, as the one line the page shows."""
  if done.error is None:
    return
  if isinstance(done.error, UserError):
    raise done.error
  raise UserError(f'the run failed: {type(done.error).__name__}: '
                  f'{done.error}') from done.error


def _weights_note(manifest: dict) -> str:
  return (f' · {jobs.RANDOM_NOTE}' if jobs.uses_random_weights(manifest)
          else '')


def _run_still(page, tab, config, content_source, style_sources, fields,
               sweep, cancel, settings_text, entry_list, outputs):
  (status, live, grid, frames, clip_player, plot, downloads, gallery,
   entries, last_sweep) = outputs
  labels = ([f'{sweep[0]}={v:g}' for v in sweep[1]] if sweep else ['run'])

  def work(on_update, should_stop):
    def progress(step, terms, image):
      if sweep:
        on_update(step, terms, image)
      else:
        on_update(step, [terms], [image])
    return nst_jax.stylize(content_source, style_sources, config=config,
                           progress=progress, should_stop=should_stop,
                           **fields)

  history = []
  job = jobs.Job(work, jobs.still_steps(config), cancel)
  yield {status: 'Preparing (the first run at a size compiles)…',
         grid: gr.update(visible=bool(sweep), value=None),
         frames: gr.update(visible=False), clip_player: gr.update(
             visible=False), downloads: None, plot: jobs.loss_plot([])}
  for item in job.updates():
    if isinstance(item, jobs.Update):
      for label, terms in zip(labels, item.terms):
        history.append((item.step, terms.get('total', math.nan), label))
      update = {status: f'Running: {jobs.format_progress(item)} · '
                        f'{jobs.format_terms(item.terms[0])}',
                plot: jobs.loss_plot(history)}
      if sweep:
        update[grid] = list(zip(item.images, labels))
      else:
        update[live] = item.images[0]
      yield update
      continue
    _raise_failure(item)
    result = item.value
    entry = page.store.save_still(tab, result, settings_text)
    entry_list.append(entry)
    state = (sweep[0], sweep[1], list(result.images)) if sweep else None
    done = ('Cancelled: kept the image reached' if result.partial
            else 'Done')
    final = result.manifest.get('final') or (
        result.manifest.get('runs') or [{}])[0].get('final') or {}
    update = {status: f'{done}. {jobs.format_terms(final)}'
                      + _weights_note(result.manifest),
              live: entry.image if not sweep else result.images[0],
              downloads: entry.files,
              gallery: [(e.image, e.caption) for e in entry_list if e.image],
              entries: entry_list, last_sweep: state}
    if sweep:
      update[grid] = list(zip(result.images, result.labels or labels))
    yield update


def _run_clip(page, tab, config, folder, clip_path, style_sources, cancel,
              settings_text, entry_list, outputs):
  (status, live, grid, frames, clip_player, plot, downloads, gallery,
   entries, last_sweep) = outputs
  total = jobs.clip_frames(clip_path)
  output = os.path.join(folder.path, 'out', 'clip.mp4')

  def work(on_update, should_stop):
    return nst_jax.stylize_video(
        clip_path, style_sources, output, config=config,
        progress=lambda frame, terms, image: on_update(frame, [terms],
                                                       [image]),
        should_stop=should_stop)

  shown, history = [], []
  job = jobs.Job(work, total, cancel)
  yield {status: 'Preparing the clip (optical flow, compiling)…',
         grid: gr.update(visible=False), frames: gr.update(visible=True,
                                                           value=None),
         clip_player: gr.update(visible=False, value=None), downloads: None,
         plot: jobs.loss_plot([])}
  for item in job.updates():
    if isinstance(item, jobs.Update):
      shown.append(item.images[0])
      history.append((item.step, item.terms[0].get('total', math.nan),
                      'frame'))
      yield {status: f'Running: {jobs.format_progress(item, "frame")} · '
                     f'{jobs.format_terms(item.terms[0])}',
             live: item.images[0], frames: list(shown),
             plot: jobs.loss_plot(history)}
      continue
    _raise_failure(item)
    result = item.value
    entry = page.store.save_clip(tab, result, settings_text)
    entry_list.append(entry)
    done = ('Cancelled: kept the frames reached' if result.partial
            else 'Done')
    flicker = (result.manifest.get('flicker') or {}).get('output_mean')
    yield {status: f'{done}: {len(result.frames)} frames'
                   + (f', flicker {flicker:.3g}' if flicker is not None
                      else '')
                   + _weights_note(result.manifest),
           clip_player: gr.update(visible=entry.video is not None,
                                  value=entry.video),
           downloads: entry.files,
           gallery: [(e.image, e.caption) for e in entry_list if e.image],
           entries: entry_list}
