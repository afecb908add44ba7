"""Running a script's function in a fresh process of that script, as the
benchmark and the studies do: each measurement gets its own memory peak,
compilation and thread pools, and a crash (e.g. killed for lack of memory)
becomes a row's error instead of ending the study.

The protocol: `run` starts `python SCRIPT --child '[name, kwargs]'`, the
script hands that argument to `serve`, which prints the function's result
as one JSON line; `run_here` calls the function in this process instead,
where only one process may open the device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def other_load():
  """Starts counting the CPU time of other processes; returns a function
  giving it since then in cores (0: the machine was ours): /proc/stat's busy
  time less this process's and its finished children's."""
  if not os.path.exists('/proc/stat'):
    return lambda: None

  def snapshot():
    with open('/proc/stat') as f:
      ticks = [int(v) for v in f.readline().split()[1:9]]
    t = os.times()
    return (time.perf_counter(),
            (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf('SC_CLK_TCK'),
            t.user + t.system + t.children_user + t.children_system)
  start = snapshot()

  def cores():
    end = snapshot()
    other = (end[1] - start[1]) - (end[2] - start[2])
    return round(max(other, 0.0) / max(end[0] - start[0], 1e-9), 3)
  return cores


def failure(proc):
  """A failed process's exception line and the tail of its stderr."""
  lines = [l for l in proc.stderr.splitlines() if 'Error' in l] or ['']
  return {'error': lines[-1], 'stderr': proc.stderr[-1500:]}


def run(script, name, kwargs, cwd, env=None):
  """`python script --child '[name, kwargs]'` in a fresh process: the JSON
  object its last stdout line holds, with 'process_wall_s' and
  'other_processes_cores', or {'error', 'stderr', 'process_wall_s'}."""
  load, start = other_load(), time.perf_counter()
  proc = subprocess.run(
      [sys.executable, os.path.abspath(script), '--child',
       json.dumps([name, kwargs])], capture_output=True, text=True, cwd=cwd,
      env=env, check=False)
  wall_s = time.perf_counter() - start
  if proc.returncode != 0:
    return dict(failure(proc), process_wall_s=wall_s)
  return dict(json.loads(proc.stdout.strip().splitlines()[-1]),
              process_wall_s=wall_s, other_processes_cores=load())


def run_child(script, function, cwd, *, cpu_only=False, **kwargs):
  """`function(**kwargs)` in a fresh process of `script` (whose `--child`
  flag calls `serve`), without a persistent compilation cache unless the
  child opens one: its result with 'process_wall_s' and
  'other_processes_cores', or {'error'}. `cpu_only`: JAX's CPU backend
  only, so the child never opens an accelerator this process holds."""
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  if cpu_only:
    env['JAX_PLATFORMS'] = 'cpu'
  return run(script, function.__name__, kwargs, cwd, env)


def run_here(function, **kwargs):
  """`run_child` in this process (where only one process may open the
  device): the result with 'in_process' and 'other_processes_cores', or
  {'error'} if it raised."""
  load = other_load()
  try:
    result = function(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'{type(e).__name__}: {e}'[:1500]}
  return dict(result, in_process=True, other_processes_cores=load())


def serve(child, functions):
  """A child's side of `run`: `child` is its '[name, kwargs]' argument;
  prints the JSON of the function of that name in `functions` (a sequence
  of functions) called with those arguments."""
  name, kwargs = json.loads(child)
  by_name = {function.__name__: function for function in functions}
  print(json.dumps(by_name[name](**kwargs)))
