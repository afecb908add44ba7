#!/usr/bin/env python3
"""What a checkpoint costs: its size, the time to write and read it, and the
share of a run's time at the default `checkpoint_every`.

  python scripts/checkpoint_cost.py                 # 512 and 2048 px
  python scripts/checkpoint_cost.py --sizes=512 --optimizers=lbfgs,adam

Per size and optimiser, in a fresh process: the default config (the
built-in scene and painting, seeded random weights, no compilation cache)
with `iterations=6`, `log_every=2` and `checkpoint_every=2`, interrupted
after 2 chunks (checkpoints written after steps 2 and 4), then the same
command again, interrupted at once (the checkpoint read back). From the
manifests (`checkpoints`, `timing`): the time per step without the writes,
the L-BFGS pairs the memory fit kept, and the run's own checkpoint (its
history holds only 4 pairs, and zeros compress). Then, the same way
(`io.checkpoints.CheckpointFolder`), a checkpoint of a full history:
random pixels, gradient and pairs of the run's shapes (Adam: its two
moments), in a process of its own; the faster of two writes, and one
read. Its share of a run that
checkpoints every `checkpoint_every` steps (configs/default.py's):
write / (checkpoint_every x step + write).

Writes JSON (--out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = '''
import json, sys, time
import jax
import numpy as np
from nst_jax import run
from nst_jax.configs import default
from nst_jax.io import checkpoints
size, optimizer, output = int(sys.argv[1]), sys.argv[2], sys.argv[3]
config = default.get_config()
config.update(dict(content='builtin:scene', style='builtin:painting',
                   weights='random', image_size=size, iterations=6,
                   log_every=2, checkpoint_every=2, optimizer=optimizer,
                   compilation_cache='', output=output))
def stop_at(polls):
  count = []
  def should_stop():
    count.append(1)
    return len(count) >= polls
  return should_stop
manifests = []
for polls in (3, 1):
  try:
    run.run(config, should_stop=stop_at(polls))
  except run.Interrupted as interrupted:
    manifests.append(interrupted.manifest)
print(json.dumps(manifests))
'''

# A checkpoint whose L-BFGS history is full (a run's after 4 steps holds 4
# pairs, and zeros compress): random values in the state's shapes, in a
# process of its own (the run's memory is gone).
FULL_CHILD = '''
import json, sys, time
import jax
import numpy as np
from nst_jax.io import checkpoints
height, width, pairs, optimizer, folder = (int(sys.argv[1]), int(sys.argv[2]),
                                            int(sys.argv[3]), sys.argv[4],
                                            sys.argv[5])
rng = np.random.default_rng(0)
image = lambda *lead: rng.random(lead + (height * width * 3,), np.float32)
state = {'pixels': image(1), 'grad': image(1)}
if pairs:
  state.update(s=image(1, pairs), y=image(1, pairs))
elif optimizer == 'adam':
  state.update(mu=image(1), nu=image(1))
abstract = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                   sharding=jax.sharding.SingleDeviceSharding(
                                       jax.devices()[0])), state)
checkpoint = checkpoints.CheckpointFolder(folder)
writes = []
for _ in range(2):
  start = time.perf_counter()
  checkpoint.save(state, {'step': 0})
  writes.append(time.perf_counter() - start)
size = checkpoint.size()
del state
start = time.perf_counter()
jax.block_until_ready(checkpoint.restore_state(abstract))
read = time.perf_counter() - start
checkpoint.remove()
print(json.dumps({'bytes': size, 'write_s': min(writes), 'restore_s': read}))
'''


def _child(script, *args) -> dict:
  out = subprocess.run([sys.executable, '-c', script, *map(str, args)],
                       cwd=REPO, check=True, capture_output=True, text=True,
                       env=dict(os.environ, NST_JAX_OFFLINE='1')).stdout
  return json.loads(out.strip().splitlines()[-1])


def measure(size: int, optimizer: str, every: int) -> dict:
  with tempfile.TemporaryDirectory() as folder:
    first, second = _child(CHILD, size, optimizer,
                           os.path.join(folder, 'result.png'))
    width, height = first['image_size']['content']
    pairs = first['device'].get('lbfgs_memory_used') or 0
    full = _child(FULL_CHILD, height, width, pairs, optimizer,
                  os.path.join(folder, 'full.ckpt'))
  written = first['checkpoints']
  steps = first['iterations_done']
  step_s = (first['timing']['optimize_s'] - written['write_s']) / steps
  return {'size': [width, height], 'optimizer': optimizer,
          'lbfgs_memory': pairs or None,
          'row_strips': first['device']['row_strips'],
          'run_bytes': written['bytes'],
          'run_write_s': written['write_s'] / written['written'],
          'run_restore_s': second['checkpoints']['restore_s'],
          'bytes': full['bytes'], 'write_s': full['write_s'],
          'restore_s': full['restore_s'], 'step_s': step_s,
          'checkpoint_every': every,
          'share': full['write_s'] / (every * step_s + full['write_s'])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='512,2048')
  parser.add_argument('--optimizers', default='lbfgs')
  parser.add_argument('--out', default='out/checkpoint_cost.json')
  args = parser.parse_args(argv)
  sys.path.insert(0, REPO)
  from nst_jax.configs import default  # pylint: disable=g-import-not-at-top
  every = default.get_config().checkpoint_every
  rows = [measure(int(size), optimizer, every)
          for size in args.sizes.split(',')
          for optimizer in args.optimizers.split(',')]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'machine': platform.processor() or platform.machine(),
               'cpus': os.cpu_count(), 'rows': rows}, f, indent=2)
  print(f'| image | optimiser | L-BFGS pairs | checkpoint (full) | write | '
        f'read | step | share at checkpoint_every={every} |')
  print('|---|---|---|---|---|---|---|---|')
  for row in rows:
    width, height = row['size']
    print(f'| {width}x{height} | {row["optimizer"]} | '
          f'{row["lbfgs_memory"] or "-"} | {row["bytes"] / 2**20:.0f} MiB | '
          f'{row["write_s"]:.2f} s | {row["restore_s"]:.2f} s | '
          f'{row["step_s"]:.2f} s | {100 * row["share"]:.2f}% |')

if __name__ == '__main__':
  main()
