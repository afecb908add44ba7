"""Running a script's function in a fresh process of that script, as the
benchmark and the studies do: each measurement gets its own memory peak,
compilation and thread pools, and a crash (e.g. killed for lack of memory)
becomes a row's error instead of ending the study."""

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
