"""Lets `python data_generation/<script>.py` work from a checkout that was not `pip install -e`'d."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_importable() -> None:
    """Put the repository root on sys.path (once) so the three packages import as packages."""
    here = str(Path(__file__).resolve().parent)
    if sys.path and sys.path[0] == here:
        # run as a script: the package folder itself is sys.path[0]; its modules must not shadow others
        sys.path.pop(0)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
