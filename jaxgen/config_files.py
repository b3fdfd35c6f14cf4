"""Loading experiment configs (`configs/<name>.py` with `get_config(variant)`).

A config file may import the modules beside it (`import common`, or another experiment's
file to reuse a section): its directory is put on the import path before it is loaded, by
`--config=` on the command line and by `load` in Python.
"""

from __future__ import annotations

import os
import re
import sys

import ml_collections


def allow_sibling_imports(config_path: str | os.PathLike) -> None:
  """Put the directory of `config_path` (`file.py` or `file.py:variant`) on sys.path."""
  path = os.fspath(config_path).split(':')[0]
  directory = os.path.dirname(os.path.abspath(path))
  if directory not in sys.path:
    sys.path.insert(0, directory)


def load(path: str | os.PathLike, variant: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(variant)` of the config file at `path`, as `--config=path:variant` gives."""
  from ml_collections import config_flags

  allow_sibling_imports(path)
  name = os.path.basename(os.fspath(path)).removesuffix('.py')
  module = config_flags.config_flags._LoadConfigModule(name, os.fspath(path))
  return module.get_config(variant) if variant is not None else module.get_config()


def missing_field(error: BaseException, dotted_paths: list[str] = ()) -> str:
  """'config has no field model.chh (did you mean model.ch?)' for ml_collections' KeyError
  (or the AttributeError around it), whose text is "'chh'\nDid you mean "ch" ...?".
  `dotted_paths` are the fields the user named (e.g. from --config.model.chh=3): the one
  that holds the missing key gives it its full path."""
  while isinstance(error, AttributeError) and error.args and isinstance(error.args[0],
                                                                          BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  key = text.splitlines()[0].strip().strip('\'"')
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  prefix = ''
  for path in dotted_paths:
    parts = path.split('.')
    if key in parts:
      prefix = '.'.join(parts[:parts.index(key)])
      prefix += '.' if prefix else ''
      break
  message = f'config has no field {prefix}{key}'
  if suggestion:
    message += f' (did you mean {prefix}{suggestion.group(1)}?)'
  return message
