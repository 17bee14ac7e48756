"""What a failed write says about where it wrote: the free space of a path's file system."""

from __future__ import annotations

import os
import shutil

import fsspec


def free_space(path: str) -> str:
    """``"N MB free on its file system"`` for a local path (or the nearest folder of it that
    exists), ``"free space unknown"`` for remote storage. Never raises: it is called while
    another error is being reported."""
    try:
        return _free_space(path)
    except Exception as exc:  # an unknown protocol, a missing filesystem package
        return f"free space unknown ({type(exc).__name__})"


def _free_space(path: str) -> str:
    fs, root = fsspec.core.url_to_fs(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("file", "local"):
        return f"free space unknown ({protocol}://)"
    probe = os.path.abspath(root)
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return f"{shutil.disk_usage(probe).free / 1e6:,.0f} MB free on its file system"
    except OSError as exc:  # pragma: no cover - a folder that vanished meanwhile
        return f"free space unknown ({exc})"
