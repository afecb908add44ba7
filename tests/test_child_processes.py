"""scripts/child_processes.py: a child's result or its one error line."""

import json
import os

from scripts import child_processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_child_process_failure_is_one_error_line(tmp_path):
  """scripts/child_processes.run: a child that raises gives its exception
  line as 'error', not an exception in the parent."""
  script = tmp_path / 'child.py'
  script.write_text(
      'import json, sys\n'
      'name, kwargs = json.loads(sys.argv[2])\n'
      "if name == 'fail':\n"
      "  raise ValueError('no such size')\n"
      "print(json.dumps({'doubled': 2 * kwargs['x']}))\n")
  ok = child_processes.run(str(script), 'double', {'x': 21}, str(tmp_path))
  assert ok['doubled'] == 42 and ok['process_wall_s'] > 0
  failed = child_processes.run(str(script), 'fail', {}, str(tmp_path))
  assert failed['error'] == 'ValueError: no such size'


def test_a_child_is_served_here_or_in_its_process(tmp_path, capsys):
  """`serve` prints the named function's JSON; `run_child` starts a
  script that serves; `run_here` turns a raise into an error row."""
  def double(x):
    return {'doubled': 2 * x}

  def fail():
    raise ValueError('no such size')

  child_processes.serve(json.dumps(['double', {'x': 4}]), [double, fail])
  assert json.loads(capsys.readouterr().out) == {'doubled': 8}
  script = tmp_path / 'serving.py'
  script.write_text(
      'import sys\n'
      f'sys.path.insert(0, {REPO!r})\n'
      'from scripts import child_processes\n'
      'import os\n'
      'def where():\n'
      "  return {'platforms': os.environ.get('JAX_PLATFORMS')}\n"
      'child_processes.serve(sys.argv[2], [where])\n')
  where = lambda: None
  where.__name__ = 'where'
  got = child_processes.run_child(str(script), where, str(tmp_path),
                                  cpu_only=True)
  assert got['platforms'] == 'cpu' and got['process_wall_s'] > 0
  here = child_processes.run_here(double, x=1)
  assert here['doubled'] == 2 and here['in_process']
  assert child_processes.run_here(fail) == {
      'error': 'ValueError: no such size'}
