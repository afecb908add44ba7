"""Several devices and hosts, simulated on the CPU, give the 1-device results.

Each case runs `RUN_SCRIPT` in fresh processes (the device count is fixed
when JAX starts): members of a sweep split over devices, one image's rows
split over devices, and both across two processes joined by
`jax.distributed` (gloo collectives on 127.0.0.1).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from nst_jax.engine import devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# argv: output, devices per process, 'hosts' | 'local', 'members' | 'rows',
# optimizer.
RUN_SCRIPT = '''
import json, sys
import jax
jax.config.update('jax_num_cpu_devices', int(sys.argv[2]))
jax.config.update('jax_disable_most_optimizations', True)
from nst_jax import run
from nst_jax.engine import programs
from nst_jax.configs import default
config = default.get_config()
config.update(dict(content='builtin:scene', style='builtin:painting',
                   weights='random', image_size=32, iterations=4, log_every=2,
                   optimizer=sys.argv[5], init='content',
                   content_layers='conv2_1', style_layers='conv1_1,conv2_1',
                   compilation_cache='', output=sys.argv[1],
                   distributed=sys.argv[3] == 'hosts',
                   shard_rows=sys.argv[4] == 'rows'))
if sys.argv[4] == 'members':
  config.sweep.style_weight = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  # Direct convolutions compile faster; the row cases keep the default
  # (Winograd on CPU), whose tiles the row split must respect.
  config.conv_algorithm = 'direct'
kept = programs.Programs()
manifest = run.run(config, programs=kept)
runs = manifest.get('runs', [manifest])
(chunk,) = kept.executables('chunk')
print(json.dumps({'process': jax.process_index(),
                  'processes': jax.process_count(),
                  'used': manifest['device']['used'],
                  'finals': [r['final']['total'] for r in runs],
                  'evaluations': [r['evaluations'] for r in runs],
                  'chunk_temp_bytes': chunk.memory_analysis().temp_size_in_bytes,
                  'warnings': manifest['warnings']}))
'''


def _start(folder, devices, where, split, optimizer='lbfgs_nols', env=None):
  return subprocess.Popen(
      [sys.executable, '-c', RUN_SCRIPT, str(folder / 'r.png'), str(devices),
       where, split, optimizer], cwd=REPO,
      env=dict(os.environ, NST_JAX_OFFLINE='1', **(env or {})),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process):
  out, err = process.communicate(timeout=300)
  assert process.returncode == 0, err[-3000:]
  # Gloo writes its own lines to stdout, sometimes after ours.
  lines = [line for line in out.splitlines() if line.startswith('{')]
  assert lines, (out[-2000:], err[-3000:])
  return json.loads(lines[-1])


def _run(folder, devices, split, optimizer='lbfgs_nols'):
  return _result(_start(folder, devices, 'local', split, optimizer))


def test_sweep_sharded_over_four_devices_matches_one(tmp_path):
  one = _run(tmp_path / 'd1', 1, 'members')
  four = _run(tmp_path / 'd4', 4, 'members')
  assert one['used'] == 1 and four['used'] == 4  # 5 members: 2 rounds
  assert four['evaluations'] == one['evaluations']
  # Each member its own result: the finals differ by 10x from member to
  # member. Not to the bit: with 4 simulated devices XLA:CPU splits the
  # matrix products over its threads differently (this test saw 2e-4 with
  # Eigen's products; 1 and 2 cores differ likewise), and L-BFGS's tiny
  # first step amplifies rounding.
  np.testing.assert_allclose(four['finals'], one['finals'], rtol=2e-3)


def test_spatial_spec_splits_rows_of_image_shaped_leaves():
  spec = devices.spatial_spec
  P = jax.P
  assert spec(np.zeros((1, 32, 32, 3)), 4) == P('members', 'rows', None, None)
  # Activations with a leading axis: rows are the third axis from the end.
  assert spec(np.zeros((1, 10, 32, 32, 3)), 4) == P(
      'members', None, 'rows', None, None)
  # L-BFGS's flat history (members, memory, H * W * 3): equal blocks of its
  # last axis are the row blocks, when the rows divide.
  assert spec(np.zeros((1, 10, 32 * 32 * 3)), 4, (32, 32, 3)) == P(
      'members', None, 'rows')
  assert spec(np.zeros((1, 10, 34 * 34 * 3)), 4, (34, 34, 3)) == P('members')
  assert spec(np.zeros((1, 64, 64)), 4, (32, 32, 3)) == P('members')  # Grams
  assert spec(np.zeros((1, 34, 34, 3)), 4) == P('members')  # uneven: whole
  assert spec(np.zeros(()), 4) == P()


def test_member_devices_and_padding():
  assert len(devices.member_devices(1)) == 1
  padded = devices.pad_members([1, 2, 3], 4)
  assert padded == [1, 2, 3, 3]


def test_rows_sharded_over_four_devices_matches_one(tmp_path):
  # The line-search L-BFGS: its dot products and Grams are sums over shards.
  one = _run(tmp_path / 'd1', 1, 'rows', 'lbfgs')
  four = _run(tmp_path / 'd4', 4, 'rows', 'lbfgs')
  assert one['used'] == 1 and four['used'] == 4
  assert four['evaluations'] == one['evaluations']
  # Shards sum in another order. The line search's cubic steps from the
  # tiny first step (t = 1/|g|_1) divide differences of nearly equal losses,
  # which amplifies that rounding (torch's algorithm does the same).
  np.testing.assert_allclose(four['finals'], one['finals'], rtol=2e-3)
  assert not any('shard_rows' in w for w in four['warnings'])
  # Each device holds a share of the activations and optimiser state.
  assert four['chunk_temp_bytes'] < 0.5 * one['chunk_temp_bytes']


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Members split over two processes: test_two_hosts_checkpoint_together_and_resume.
@pytest.mark.parametrize('split', ['rows'])
def test_two_processes_match_one(tmp_path, split):
  """jax.distributed over 2 processes x 2 CPU devices (a simulated 2-host
  cluster, gloo collectives, one output folder on a shared file system)
  gives the single-device results; only process 0 writes."""
  port = _free_port()
  processes = [
      _start(tmp_path / 'shared', 2, 'hosts', split,
             env={'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
                  'NST_JAX_NUM_PROCESSES': '2',
                  'NST_JAX_PROCESS_ID': str(k)}) for k in range(2)]
  results = [_result(process) for process in processes]
  single = _run(tmp_path / 's', 1, split)

  assert [r['processes'] for r in results] == [2, 2]
  assert [r['used'] for r in results] == [4, 4]
  assert single['used'] == 1
  for result in results:
    assert result['evaluations'] == single['evaluations']
    np.testing.assert_allclose(result['finals'], single['finals'], rtol=1e-4)
  written = json.loads((tmp_path / 'shared' / 'r.json').read_text())
  expected = {os.path.basename(path) for path in (
      written['outputs'].get('images') or [written['outputs']['image']])}
  expected |= {'r.json'} | ({'r_grid.png'} if split == 'members' else set())
  # Each file once, no temporary files, the checkpoint folder removed.
  assert set(os.listdir(tmp_path / 'shared')) == expected


def test_three_member_mesh_from_four_devices(tmp_path):
  """Any count and order of devices (no physical cuboid asked for)."""
  script = (
      'import jax\n'
      "jax.config.update('jax_num_cpu_devices', 4)\n"
      'from nst_jax.engine import devices\n'
      'chosen = devices.member_devices(3)\n'
      'mesh = devices.make_mesh(chosen[::-1], False)\n'
      'rows = devices.make_mesh(chosen, True)\n'
      'print(mesh.devices.shape, [d.id for d in mesh.devices.flat],\n'
      '      rows.devices.shape)\n')
  out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       check=True).stdout
  assert out.split('\n')[0] == '(3,) [2, 1, 0] (1, 3)'


@pytest.mark.parametrize('members', [1, 2])
def test_vmap_loop_selects_over_no_history(tmp_path, small_config, members):
  """No select over L-BFGS's history-sized arrays in the compiled chunk
  under sweep.mode='vmap': one member runs the plain program, and a batch
  selects only a stopped member's pixels, loss and gradient (vmap of a
  while loop would select over the whole loop state every step)."""
  from nst_jax.engine import programs as programs_lib  # pylint: disable=g-import-not-at-top
  from nst_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  kept = programs_lib.Programs()
  run_lib.run(small_config(tmp_path, optimizer='lbfgs', lbfgs_memory=7,
                           iterations=2, log_every=2, sweep_mode='vmap',
                           sweep_style_weight=(1e-2, 1e-1)[:members]),
              programs=kept)
  (chunk,) = kept.executables('chunk')
  text = chunk.as_text()
  assert '7,3072]' in text  # 7 pairs of 32 x 32 x 3
  # Any select whose result holds the histories (batched: f32[K,7,3072]).
  assert not re.search(r'= f32\[(\d+,)*7,3072\]\{[^}]*\} select\(', text)


SIGNAL_SCRIPT = '''
import sys
from absl import logging
import jax
jax.config.update('jax_disable_most_optimizations', True)
from nst_jax import run
from nst_jax.configs import default
logging.set_verbosity(logging.INFO)
config = default.get_config()
config.update(dict(content='builtin:scene', style='builtin:painting',
                   weights='random', image_size=32, iterations=100000,
                   log_every=1, optimizer='lbfgs_nols', init='content',
                   content_layers='conv1_2', style_layers='conv1_1',
                   conv_algorithm='direct', compilation_cache='',
                   output=sys.argv[1], distributed=True))
try:
  run.run(config)
except run.Interrupted as interrupted:
  print('interrupted', interrupted.signum, flush=True)
  sys.exit(3)
'''


def test_a_signal_to_one_process_stops_both(tmp_path):
  """SIGTERM (a spot VM's preemption) reaches process 1 only; both leave
  the loop at the same chunk (no hang in a collective), checkpoint it
  together, and process 0 saves the partial result."""
  port = _free_port()
  logs = [tmp_path / f'log{k}' for k in range(2)]
  processes = [subprocess.Popen(
      # One output folder on a file system both share: the checkpoint is
      # written by both processes together.
      [sys.executable, '-c', SIGNAL_SCRIPT, str(tmp_path / 'shared' / 'r.png')],
      cwd=REPO, stdout=subprocess.PIPE, stderr=open(logs[k], 'w'), text=True,
      env=dict(os.environ, NST_JAX_OFFLINE='1', JAX_NUM_CPU_DEVICES='1',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               NST_JAX_NUM_PROCESSES='2', NST_JAX_PROCESS_ID=str(k)))
               for k in range(2)]
  try:
    deadline = time.monotonic() + 200
    while 'iteration' not in logs[1].read_text():
      assert time.monotonic() < deadline and processes[1].poll() is None, (
          logs[1].read_text()[-2000:])
      time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=60)[0] for p in processes]
  finally:
    for process in processes:
      process.kill()
  assert [p.returncode for p in processes] == [3, 3], [
      log.read_text()[-2000:] for log in logs]
  assert all(out.strip().endswith(f'interrupted {int(signal.SIGTERM)}')
             for out in outputs)
  written = json.loads((tmp_path / 'shared' / 'r.json').read_text())
  assert written['partial'] and written['stop_reason'] == 'interrupted'
  assert written['checkpoint'] == str(tmp_path / 'shared' / 'r.ckpt')


# argv: output, 'hosts' | 'local', 'stop' (process 1 asks to stop before
# its third chunk) | 'run'.
RESUME_SCRIPT = '''
import json, sys
import jax
jax.config.update('jax_num_cpu_devices', 2)
jax.config.update('jax_disable_most_optimizations', True)
from nst_jax import run
from nst_jax.configs import default
from nst_jax.errors import UserError
config = default.get_config()
config.update(dict(content='builtin:scene', style='builtin:painting',
                   weights='random', image_size=32, iterations=6, log_every=2,
                   checkpoint_every=2, optimizer='lbfgs', init='content',
                   content_layers='conv2_1', style_layers='conv1_1,conv2_1',
                   conv_algorithm='direct', compilation_cache='',
                   output=sys.argv[1], distributed=sys.argv[2] == 'hosts'))
config.sweep.style_weight = (1e-3, 1e-2, 1e-1, 1.0)
polls = []
def should_stop():
  polls.append(1)
  return (sys.argv[3] == 'stop' and jax.process_index() == 1
          and len(polls) >= 3)
try:
  manifest = run.run(config, should_stop=should_stop)
except run.Interrupted as interrupted:
  print(json.dumps({'checkpoint': interrupted.manifest['checkpoint']}))
  sys.exit(0)
except UserError as error:
  print(json.dumps({'error': str(error)}))
  sys.exit(0)
print(json.dumps({'resumed': manifest['resumed'],
                  'processes': jax.process_count(),
                  'used': manifest['device']['used'],
                  'finals': [r['final']['total'] for r in manifest['runs']],
                  'evaluations': [r['evaluations'] for r in manifest['runs']]}))
'''


def _resume_processes(output, where, action, outputs=None):
  port = _free_port()
  count = 2 if where == 'hosts' else 1
  outputs = outputs or [output] * count
  processes = [subprocess.Popen(
      [sys.executable, '-c', RESUME_SCRIPT, str(outputs[k]), where, action],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, NST_JAX_OFFLINE='1',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               NST_JAX_NUM_PROCESSES=str(count), NST_JAX_PROCESS_ID=str(k)))
               for k in range(count)]
  return [_result(process) for process in processes]


def test_two_hosts_checkpoint_together_and_resume(tmp_path):
  """Each of 2 processes (2 devices each) writes its members' shards into
  one checkpoint on a shared folder; both resume from it, and a run on
  other devices refuses it. Processes given different folders are told
  so. The resumed sweep gives the single-process results, and only
  process 0 writes."""
  apart = _resume_processes(None, 'hosts', 'stop', outputs=[
      tmp_path / f'p{k}' / 'r.png' for k in range(2)])
  for k, result in enumerate(apart):  # not a hang
    assert result['error'] == (
        f'{tmp_path}/p{k}/r.ckpt: the processes would checkpoint into '
        'different folders; give them one output folder on a file system '
        'they all share')
  output = tmp_path / 'shared' / 'r.png'
  checkpoint = str(tmp_path / 'shared' / 'r.ckpt')
  stopped = _resume_processes(output, 'hosts', 'stop')
  assert stopped == [{'checkpoint': checkpoint}] * 2
  # Both processes' shards are in it.
  (number,) = os.listdir(checkpoint)
  shards = os.listdir(os.path.join(checkpoint, number, 'state'))
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= set(shards)
  (refused,) = _resume_processes(output, "local", "run")
  assert refused['error'].startswith(f'{checkpoint}: made on other devices (')
  assert 'devices 4 there, 2 here' in refused['error']
  resumed = _resume_processes(output, 'hosts', 'run')
  (single,) = _resume_processes(tmp_path / 'single' / 'r.png', 'local', 'run')
  assert [r['processes'] for r in resumed] == [2, 2]
  assert [r['used'] for r in resumed] == [4, 4] and single['used'] == 2
  for result in resumed:
    assert result['resumed'] == {'checkpoint': checkpoint, 'level': 0,
                                 'step': 4}
    assert result['evaluations'] == single['evaluations']
    np.testing.assert_allclose(result['finals'], single['finals'], rtol=1e-4)
  # Each file once, no temporary files, the checkpoint folder removed.
  assert set(os.listdir(output.parent)) == {
      'r.json', 'r_grid.png', *(f'r_{k}.png' for k in range(4))}
