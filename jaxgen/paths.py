"""Workdir paths: local directories or object-store URIs (gs://, s3://) through etils.epath.

orbax/tensorstore, tensorboardX and epath each reach Cloud Storage on their own; everything
jaxgen itself writes into a workdir goes through `workdir_path` so one path works for all.
"""

from __future__ import annotations

import os

from etils import epath

_URI_SCHEMES = ('gs://', 's3://')


def is_remote(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(_URI_SCHEMES)


def workdir_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an epath.Path: URIs as given, local paths made absolute."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(path))
