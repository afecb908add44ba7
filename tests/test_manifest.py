"""The manifest's one schema: what it describes, its version, its outputs."""

from nst_jax.io import manifest as manifest_lib


def test_header_names_the_kind_and_the_format_version():
  for kind in manifest_lib.KINDS:
    assert manifest_lib.header(kind) == {
        'kind': kind, 'manifest_version': manifest_lib.MANIFEST_VERSION}


def test_a_still_image_and_a_sweep_name_their_outputs():
  still = manifest_lib.with_outputs(
      dict(manifest_lib.header('still'), final={}), 'out/r.png')
  assert still['outputs'] == {'image': 'out/r.png',
                              'manifest': 'out/r.json'}
  sweep = manifest_lib.with_outputs(
      dict(manifest_lib.header('sweep'), runs=[{}, {}]), 'out/s.png')
  assert sweep['outputs'] == {'images': ['out/s_0.png', 'out/s_1.png'],
                              'grid': 'out/s_grid.png',
                              'manifest': 'out/s.json'}
  assert [run['output'] for run in sweep['runs']] == sweep['outputs'][
      'images']
  assert manifest_lib.output_lines(sweep) == [
      'out/s_0.png', 'out/s_1.png', 'out/s_grid.png']


def test_output_lines_read_a_partial_clip_without_its_video():
  partial = dict(manifest_lib.header('video'), frames_done=2,
                 outputs={'frames': 'out/clip', 'video': None,
                          'manifest': 'out/clip.json'})
  assert manifest_lib.output_lines(partial) == ['out/clip/ (2 frames)']
  done = dict(partial, outputs=dict(partial['outputs'],
                                    video='out/clip.mp4'))
  assert manifest_lib.output_lines(done)[0] == 'out/clip.mp4'
