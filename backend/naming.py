"""File names for views: unique by construction, stable, readable (standard library only, so the
add-on's bpy side uses the same rule as the backend).

"Cam 1", "Cam_1" and "CAM 1", or "前" and "後", must never share a file: the view's index in the
rig comes first, an ASCII slug of its name after it for people browsing the folder.
"""

from __future__ import annotations

import re


def view_stem(index: int, name: str, max_slug: int = 48) -> str:
    """``007_Cam_1`` for view 7 named "Cam 1"; ``001`` for a name with no ASCII letters or digits."""
    if index < 0:
        raise ValueError(f"view index must be >= 0, got {index}")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:max_slug].rstrip("_-")
    return f"{index:03d}_{slug}" if slug else f"{index:03d}"
