"""Where the reference fixtures live: ``../shared/fixtures/<name>`` beside the checkout (CI's fresh
clone has it too), or the folder an environment variable names. They are never copied into the
repository. A missing folder is an error that says where it was looked for, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def fixture_dir(name: str) -> Path:
    """``SEVA_FIXTURES``/``MAGICFIXUP_FIXTURES``/``NEURALGAFFER_FIXTURES`` override ``../shared/fixtures/<name>``."""
    override = os.environ.get(f"{name.upper()}_FIXTURES")
    path = Path(override) if override else SHARED / "fixtures" / name
    if not path.is_dir():
        raise FileNotFoundError(f"reference fixtures {name!r} not found at {path}: the shared folder must sit beside the checkout")
    return path


def research_file(name: str) -> Path:
    path = SHARED / "research" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the shared folder must sit beside the checkout")
    return path
