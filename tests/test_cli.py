"""The command line: configs by name or path, --help, one-line errors,
installed use, weights download progress and file modes."""

import argparse
import functools
import hashlib
import importlib
import http.server
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import types

from absl import flags
import numpy as np
import pytest

from nst_jax import cli, main as main_lib, run as run_lib, weights
from nst_jax.engine import config_files
from nst_jax.configs import cpu, default
from nst_jax.errors import UserError
from nst_jax.weights import __main__ as weights_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'scripts', 'reproduce_figures.py')
# The module (nst_jax.weights.fetch is also the name of its function).
fetch_lib = importlib.import_module('nst_jax.weights.fetch')
SHIPPED = ('cpu', 'default', 'demo', 'gpu', 'paper_default', 'paper_smoke',
           'paper_textures', 'tpu')


def parse(*args, default_config='default'):
  """cli.parse_flags on fresh flags (a --debug flag as main.py's)."""
  flag_values = flags.FlagValues()
  flags.DEFINE_bool('debug', False, 'Show tracebacks.',
                    flag_values=flag_values)
  cli.parse_flags(['prog', *args], flag_values,
                  default_config=default_config, prog='prog', about='About.',
                  own_flags=['debug'])
  return flag_values


def refused(*args) -> str:
  """The UserError message parse(*args) raises."""
  with pytest.raises(UserError) as error:
    parse(*args)
  message = str(error.value)
  assert '\n' not in message
  return message


def run_cli(*args, cwd, command=(sys.executable, '-m', 'nst_jax.main'),
            env=None):
  process = subprocess.run(list(command) + list(args), cwd=cwd,
                           env=dict(os.environ, **(env or {})), text=True,
                           capture_output=True, timeout=120)
  return process.returncode, process.stdout, process.stderr


def leaf_fields(config):
  return [path for path in cli.field_paths(config)
          if not hasattr(cli.field_value(config, path), 'keys')]


# ---------------------------------------------------------------------------
# Choosing a config.

def test_shipped_config_names():
  assert set(SHIPPED) <= set(config_files.config_names())
  assert config_files.configs_folder() == os.path.join(REPO, 'configs')


def test_default_config_when_none_given():
  config = parse().config
  assert config.to_dict() == default.get_config().to_dict()


@pytest.mark.parametrize('args', [('--config=cpu',), ('--config', 'cpu'),
                                  ('-config=cpu',)])
def test_config_by_name(args):
  config = parse(*args, '--config.iterations=7').config
  expected = cpu.get_config()
  expected.iterations = 7
  assert config.to_dict() == expected.to_dict()


def test_config_by_path_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  assert parse('--config=configs/demo.py').config.image_size == 128
  monkeypatch.chdir(tmp_path)
  assert parse(f'--config={REPO}/configs/demo.py').config.image_size == 128
  assert parse('--config=../' + os.path.relpath(
      os.path.join(REPO, 'configs', 'tpu.py'), tmp_path.parent)
               ).config.image_size == 1024


def test_config_path_with_argument(tmp_path, monkeypatch):
  (tmp_path / 'mine.py').write_text(textwrap.dedent('''\
      from nst_jax.configs import cpu

      def get_config(size='64'):
        config = cpu.get_config()
        config.image_size = int(size)
        return config
      '''))
  monkeypatch.chdir(tmp_path)
  assert parse('--config=mine.py').config.image_size == 64
  config = parse('--config=mine.py:48', '--config.seed=3').config
  assert (config.image_size, config.seed, config.init) == (48, 3, 'content')


def test_overrides_of_each_type():
  config = parse('--config.image_size=64', '--config.style_weight=2e-3',
                 '--config.sliced_redraw', '--config.content=a.png',
                 "--config.sweep.seed=(1,2)", '--noconfig.shard_rows').config
  assert (config.image_size, config.style_weight, config.sliced_redraw,
          config.content, tuple(config.sweep.seed), config.shard_rows) == (
              64, 2e-3, True, 'a.png', (1, 2), False)


# ---------------------------------------------------------------------------
# Bad input: one line naming the flag.

def test_unknown_field():
  assert refused('--config.stlye_weight=1') == (
      '--config.stlye_weight: no such field; did you mean '
      '--config.style_weight? (see --help)')
  assert refused('--config.sweep.styel=a.jpg') == (
      '--config.sweep.styel: no such field; did you mean '
      '--config.sweep.style? (see --help)')
  assert refused('--config.qqqqq=1') == (
      '--config.qqqqq: no such field (see --help)')
  assert refused('--config.content.x=1').startswith(
      '--config.content.x: no such field')


@pytest.mark.parametrize('flag, expected', [
    ('--config.image_size=abc', "expected an integer, got 'abc'"),
    ('--config.image_size=1.5', "expected an integer, got '1.5'"),
    ('--config.style_weight=x', "expected a number, got 'x'"),
    ('--config.sliced_redraw=maybe',
     "expected true or false, got 'maybe'")])
def test_value_of_wrong_type(flag, expected):
  field = flag.split('=')[0]
  assert refused(flag) == f'{field}: {expected} (see --help)'


def test_unknown_config_name_lists_the_shipped_ones():
  message = refused('--config=cpuu')
  assert message.startswith('--config=cpuu: no shipped config of that name; '
                            'valid are cpu, default, demo, gpu, ')
  for name in SHIPPED:
    assert name in message


def test_config_files_that_do_not_load(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert refused('--config=missing.py') == (
      '--config: cannot load the config file missing.py (file not found)')
  assert 'a folder' in refused(f'--config={tmp_path}')
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  assert refused('--config=syntax.py').startswith(
      '--config: cannot load the config file syntax.py (SyntaxError: ')
  (tmp_path / 'old.py').write_text(
      'import configs.no_such_config_zz\n')
  message = refused('--config=old.py')
  assert 'ModuleNotFoundError' in message
  assert 'from nst_jax.configs import default' in message
  (tmp_path / 'none.py').write_text('x = 1\n')
  assert refused('--config=none.py') == (
      '--config=none.py: the config file has no get_config()')
  (tmp_path / 'fails.py').write_text(
      'def get_config():\n  raise ValueError("no")\n')
  assert refused('--config=fails.py') == (
      '--config=fails.py: get_config() failed (ValueError: no)')
  (tmp_path / 'dict.py').write_text('def get_config():\n  return {}\n')
  assert 'returned a dict' in refused('--config=dict.py')


def test_other_bad_command_lines():
  assert refused('--config').startswith('--config: needs a value')
  assert refused('photo.jpg').startswith('unexpected arguments: photo.jpg')
  assert refused('--nosuchflag') == (
      "Unknown command line flag 'nosuchflag' (see --help)")


@pytest.mark.parametrize('args, line', [
    (['--config.stlye_weight=1'],
     'error: --config.stlye_weight: no such field; did you mean '
     '--config.style_weight? (see --help)'),
    (['--config=cpuu'], 'error: --config=cpuu: no shipped config of that '
     'name; valid are ' + ', '.join(SHIPPED) + ", or a config file's path"),
    (['--config=no/such.py'],
     'error: --config: cannot load the config file no/such.py (file not '
     'found)'),
    (['--config=cpu', '--config.image_size=abc'],
     "error: --config.image_size: expected an integer, got 'abc' (see "
     '--help)')])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, line):
  code, stdout, stderr = run_cli(*args, cwd=tmp_path)
  assert (code, stdout, stderr) == (2, '', line + '\n')


def test_debug_shows_the_traceback(tmp_path):
  code, _, stderr = run_cli('--config=cpuu', '--debug', cwd=tmp_path)
  assert code == 1 and 'Traceback' in stderr and 'UserError' in stderr


# ---------------------------------------------------------------------------
# --help.

def test_field_docs_rules():
  source = textwrap.dedent('''\
      def get_config():
        config = ml_collections.ConfigDict()
        # First section.
        config.a = 1        # the a
        config.b = 'x#y'    # the b,
                            # continued
        # about c, not b's (another column)
        config.c = 2.0
        config.d = ()

        # Second section, above a field without its own comment.
        config.e = False
        config.sweep = ml_collections.ConfigDict()
        config.sweep.f = ()  # the f
        return config
      ''')
  docs = cli.field_docs(source)
  assert list(docs) == ['a', 'b', 'c', 'd', 'e', 'sweep', 'sweep.f']
  first, second = 'First section.', ('Second section, above a field without '
                                     'its own comment.')
  assert docs['a'] == cli.FieldDoc('the a', first)
  assert docs['b'] == cli.FieldDoc('the b, continued', first)
  assert docs['c'] == cli.FieldDoc("about c, not b's (another column)", first)
  assert docs['d'] == cli.FieldDoc('', first)
  assert docs['e'] == cli.FieldDoc('', second)
  assert docs['sweep.f'] == cli.FieldDoc('the f', second)


def test_every_commented_default_field_is_documented():
  with open(os.path.join(REPO, 'configs', 'default.py')) as file:
    source = file.read()
  docs = cli.field_docs(source)
  assert set(leaf_fields(default.get_config())) <= set(docs)
  inline = re.findall(r'^\s*config\.([\w.]+) = .*?  +# (.*)$', source, re.M)
  assert len(inline) > 20
  for field, comment in inline:
    assert docs[field].meaning.startswith(comment.strip()), field


def test_help_lists_flags_configs_and_fields(tmp_path):
  code, stdout, stderr = run_cli('--help', cwd=tmp_path,
                                 env={'COLUMNS': '100'})
  assert (code, stderr) == (0, '')
  assert stdout.startswith('usage: python -m nst_jax.main ')
  for flag in ('--config=NAME|PATH[:ARG]', '--config.FIELD=VALUE',
               '--[no]debug'):
    assert f'\n  {flag} ' in stdout, flag
  for name in SHIPPED:
    assert re.search(rf'^  {name} +\S', stdout, re.M), name
  config = default.get_config()
  docs = cli.documented_fields()
  for path in leaf_fields(config):
    line = f'  {path} = {cli.field_value(config, path)!r}'
    assert line in stdout, line
    words = docs[path].meaning.split()[:3]
    if words:  # the meaning starts beside or under its field
      after = stdout[stdout.index(line) + len(line):]
      assert after.split()[:len(words)] == words, path
  assert '\nSizes:\n' in stdout


def test_help_shows_the_chosen_configs_values():
  flag_values = flags.FlagValues()
  flags.DEFINE_bool('debug', False, 'Show tracebacks.',
                    flag_values=flag_values)
  text = cli.help_text('prog', 'About.', 'paper_smoke',
                       config_files.load('paper_smoke'),
                       [flag_values['debug']], width=80)
  assert '  image_size = 64 ' in text and "  weights = 'random' " in text
  assert 'with their values in --config=paper_smoke:' in ' '.join(
      text.split())
  assert max(len(line) for line in text.splitlines()) <= 80


# ---------------------------------------------------------------------------
# main: exit statuses.

def test_main_exit_statuses(monkeypatch, capsys):
  flag_values = types.SimpleNamespace(config=default.get_config(),
                                      debug=False)

  def returns(manifest):
    monkeypatch.setattr(run_lib, 'run', lambda config: manifest)
    return main_lib.main(['prog'], flag_values)

  def raises(error):
    def run(config):
      raise error
    monkeypatch.setattr(run_lib, 'run', run)
    return main_lib.main(['prog'], flag_values)

  assert raises(UserError('config.x: bad')) == 2
  assert capsys.readouterr().err == 'error: config.x: bad\n'
  assert raises(run_lib.Interrupted(15, {
      'kind': 'still', 'outputs': {'image': 'o/r.png'}})) == 128 + 15
  assert capsys.readouterr().err == (
      'interrupted: partial result saved to o/r.png\n')
  done = {'kind': 'still', 'outputs': {'image': 'o/r.png'},
          'stop_reason': 'iterations',
          'final': {'total': 1.5}, 'evaluations': 3}
  assert returns(done) == 0
  assert capsys.readouterr().out == (
      'wrote o/r.png (final loss 1.5, 3 evaluations)\n')
  assert returns(dict(done, stop_reason='non_finite',
                      non_finite_at_iteration=4)) == 1
  assert 'non-finite at iteration 4' in capsys.readouterr().err
  flag_values.debug = True
  with pytest.raises(UserError):
    raises(UserError('config.x: bad'))


# ---------------------------------------------------------------------------
# Installed use: configs as the package nst_jax.configs.

def test_setup_cfg_ships_configs_as_a_package():
  from setuptools.config import setupcfg  # pylint: disable=g-import-not-at-top
  options = setupcfg.read_configuration(os.path.join(REPO, 'setup.cfg'))[
      'options']
  assert options['package_dir'] == {'nst_jax.configs': 'configs'}
  found = {os.path.relpath(folder, REPO).replace(os.sep, '.')
           for folder, _, names in os.walk(os.path.join(REPO, 'nst_jax'))
           if '__init__.py' in names}
  assert set(options['packages']) == found | {'nst_jax.configs'}


def _copy(folder, installed):
  """nst_jax and configs/ into `folder`: as an install lays them out
  (configs/ inside nst_jax/), or as a checkout does (side by side)."""
  ignore = shutil.ignore_patterns('__pycache__')
  shutil.copytree(os.path.join(REPO, 'nst_jax'), folder / 'nst_jax',
                  ignore=ignore)
  configs = folder / 'nst_jax' / 'configs' if installed else folder / 'configs'
  shutil.copytree(os.path.join(REPO, 'configs'), configs, ignore=ignore)


def test_installed_layout_from_another_folder(tmp_path):
  _copy(tmp_path / 'site', installed=True)
  (tmp_path / 'work').mkdir()
  (tmp_path / 'work' / 'mine.py').write_text(
      'from nst_jax.configs import paper_smoke\n'
      'get_config = paper_smoke.get_config\n')
  code, stdout, stderr = run_cli(
      '-c', 'from nst_jax.engine import config_files\n'
      'print(config_files.configs_folder())\n'
      "print(config_files.load('paper_smoke').image_size)\n"
      "print(config_files.load('mine.py').weights)\n",
      cwd=tmp_path / 'work', command=[sys.executable],
      env={'PYTHONPATH': str(tmp_path / 'site')})
  assert code == 0, stderr
  assert stdout.split() == [str(tmp_path / 'site' / 'nst_jax' / 'configs'),
                            '64', 'random']


def test_checkout_that_no_install_maps(tmp_path):
  checkout = tmp_path / 'checkout'
  _copy(checkout, installed=False)
  code, stdout, stderr = run_cli(
      '-c', 'import sys\n'
      '# No finder of an editable install: the checkout stands alone.\n'
      'sys.meta_path[:] = [f for f in sys.meta_path if not getattr(\n'
      "    f, '__module__', '').startswith('__editable__')]\n"
      'from nst_jax.engine import config_files\n'
      "print(config_files.load('configs/cpu.py').image_size)\n"
      "print(config_files.load('tpu').image_size)\n"
      'print(config_files.configs_folder())\n',
      cwd=checkout, command=[sys.executable])
  assert code == 0, stderr
  assert stdout.split() == ['256', '1024', str(checkout / 'configs')]


def test_reproduce_figures_shares_the_parser(tmp_path):
  command = [sys.executable, SCRIPT]
  code, stdout, stderr = run_cli('--config=cpuu', '--figure=3', cwd=tmp_path,
                                 command=command)
  assert code == 2 and stdout == ''
  assert stderr.startswith('error: --config=cpuu: no shipped config')
  assert len(stderr.splitlines()) == 1
  code, stdout, _ = run_cli('--config=paper_smoke', '--help', cwd=tmp_path,
                            command=command)
  assert code == 0
  assert '  --figure=VALUE ' in stdout and '  image_size = 64 ' in stdout


# ---------------------------------------------------------------------------
# Weights: download progress, help, file modes.

def test_format_progress():
  assert fetch_lib.format_progress(34_200_000, 80_100_000, 6.7) == (
      '34.2 MB / 80.1 MB (42%), 5.1 MB/s, 9 s left')
  assert fetch_lib.format_progress(34_200_000, None, 6.7) == (
      '34.2 MB, 5.1 MB/s')
  assert fetch_lib.format_progress(0, 80_100_000, 0.0) == (
      '0 B / 80.1 MB (0%)')
  assert fetch_lib.format_progress(80_100_000, 80_100_000, 20.0) == (
      '80.1 MB / 80.1 MB (100%), 4.0 MB/s')
  assert [fetch_lib.format_size(n) for n in (950, 12_300, 1.2e9, 3.4e12)] == [
      '950 B', '12.3 kB', '1.2 GB', '3400.0 GB']
  assert [fetch_lib.format_duration(s) for s in (7, 185, 7440)] == [
      '7 s', '3 min 05 s', '2 h 04 min']


class FakeTerminal(io.StringIO):

  def isatty(self):
    return True


def test_progress_on_a_terminal_updates_in_place_a_few_times_a_second():
  now = [0.0]
  terminal = FakeTerminal()
  progress = fetch_lib.Progress(900, terminal, log=None, interval=0.25,
                                clock=lambda: now[0])
  for step in range(1, 11):  # ten blocks in one second
    now[0] = step * 0.1
    progress.update(step * 90)
  progress.finish(900)
  lines = terminal.getvalue().split('\r')
  assert lines[0] == '' and terminal.getvalue().endswith('\n')
  # Shown at 0.1 s, then at least 0.25 s apart: 0.4, 0.7, 1.0; then the end.
  assert [line.rstrip() for line in lines[1:-1]] == [
      '90 B / 900 B (10%), 900 B/s, 1 s left',
      '360 B / 900 B (40%), 900 B/s, 1 s left',
      '630 B / 900 B (70%), 900 B/s, 1 s left',
      '900 B / 900 B (100%), 900 B/s']
  # A line shorter than the one before blanks the rest of it.
  assert len(lines[4]) == len(lines[3]) and lines[4].endswith('  ')
  assert lines[-1] == 'downloaded 900 B in 1 s (900 B/s)\n'


def test_progress_off_a_terminal_logs_a_few_lines():
  logged = []
  progress = fetch_lib.Progress(10_000, io.StringIO(), log=logged.append)
  for done in range(1, 10_001):
    progress.update(done)
  progress.finish(10_000)
  assert [line.split(' (')[1][:4] for line in logged[:-1]] == [
      '25%)', '50%)', '75%)']
  assert logged[-1].startswith('downloaded 10.0 kB in ')
  logged.clear()
  unknown = fetch_lib.Progress(None, io.StringIO(), log=logged.append)
  unknown.update(5000)
  unknown.finish(5000)
  assert len(logged) == 1


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):
    pass


@pytest.fixture
def served(tmp_path):
  """A 300 kB file on 127.0.0.1 (an ephemeral port); yields (url, bytes)."""
  folder = tmp_path / 'served'
  folder.mkdir()
  payload = np.random.default_rng(0).bytes(300_000)
  (folder / 'vgg19.h5').write_bytes(payload)
  handler = functools.partial(_QuietHandler, directory=str(folder))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f'http://127.0.0.1:{server.server_address[1]}/vgg19.h5', payload
  server.shutdown()
  server.server_close()


@pytest.fixture
def umask_022():
  previous = os.umask(0o022)
  yield
  os.umask(previous)


RANDOM_META = {'source': 'random', 'source_file': None, 'source_sha256': None,
               'preprocessing': 'caffe', 'normalized': False, 'random': True,
               'seed': 0}


def test_fetch_shows_progress_and_writes_0644(tmp_path, served, monkeypatch,
                                              random_params, umask_022):
  url, payload = served
  converted = []

  def convert_keras(path):
    with open(path, 'rb') as file:
      converted.append(file.read())
    return random_params, dict(RANDOM_META)

  monkeypatch.setattr(fetch_lib, 'convert_keras', convert_keras)
  terminal, logged = FakeTerminal(), []
  out = tmp_path / 'w' / 'vgg19_keras.npz'
  weights.fetch(str(out), url=url, md5=hashlib.md5(payload).hexdigest(),
                log=logged.append, stream=terminal)
  assert converted == [payload]
  shown = terminal.getvalue()
  assert '/ 300.0 kB (' in shown  # the total, from Content-Length
  assert shown.startswith('\r') and shown.endswith('\n')
  assert 'downloaded 300.0 kB in ' in shown
  assert logged == [f'downloading {url}', f'wrote {out}']
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
  assert os.listdir(out.parent) == ['vgg19_keras.npz']

  logged.clear()  # Off a terminal: plain lines through log, a few at most.
  weights.fetch(str(out), url=url, md5=hashlib.md5(payload).hexdigest(),
                log=logged.append, stream=io.StringIO())
  assert 3 <= len(logged) <= 7 and logged[-2].startswith('downloaded 300.0 kB')


def test_save_weights_mode_follows_umask(tmp_path, random_params, umask_022):
  path = tmp_path / 'w.npz'
  weights.save_weights(str(path), random_params, RANDOM_META)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  os.umask(0o077)
  weights.save_weights(str(path), random_params, RANDOM_META)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
  assert os.listdir(tmp_path) == ['w.npz']
  assert weights.load_weights(str(path))[1]['random']


def test_weights_help_explains_every_command_and_argument(capsys):
  parser = weights_cli._parser()  # pylint: disable=protected-access
  (commands,) = [action for action in parser._actions  # pylint: disable=protected-access
                 if isinstance(action, argparse._SubParsersAction)]  # pylint: disable=protected-access
  assert set(commands.choices) == {'convert', 'fetch', 'random', 'normalize',
                                   'info'}
  for choice in commands._choices_actions:  # pylint: disable=protected-access
    assert choice.help, choice.dest
  for name, subparser in commands.choices.items():
    assert subparser.description, name
    for action in subparser._actions:  # pylint: disable=protected-access
      if not isinstance(action, argparse._HelpAction):  # pylint: disable=protected-access
        assert action.help and action.help != argparse.SUPPRESS, (
            name, action.dest)
  with pytest.raises(SystemExit) as exit_:
    weights_cli.main(['fetch', '--help'])
  assert exit_.value.code == 0
  text = capsys.readouterr().out
  assert '--url URL' in text and 'a mismatch stops' in text


def test_fetch_of_a_file_that_is_not_keras_names_the_url(tmp_path, served):
  url, payload = served
  out = tmp_path / 'w' / 'vgg19_keras.npz'
  with pytest.raises(UserError) as error:
    weights.fetch(str(out), url=url, md5=hashlib.md5(payload).hexdigest(),
                  log=lambda _: None, stream=io.StringIO())
  assert str(error.value).startswith(f'download {url}: not a readable HDF5')
  assert os.listdir(out.parent) == []
