"""Loading experiment configs (`configs/<name>.py` with `get_config(variant)`).

A config file may import the modules beside it (`import common`, or another experiment's
file to reuse a section): its directory is put on the import path before it is loaded, by
`--config=` on the command line and by `load` in Python.
"""

from __future__ import annotations

import os
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
