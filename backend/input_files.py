"""What an input file really is, read from its first bytes, never from its name.

The server runs this on every upload (a 12000² PNG named ``.img`` is still a 144-megapixel
image), and jobs check that each view's passes have the view's size before any model loads.
Only headers are read: nothing here decodes pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXR_MAGIC = b"\x76\x2f\x31\x01"
HDR_MAGICS = (b"#?RADIANCE", b"#?RGBE")
NPY_MAGIC = b"\x93NUMPY"


class InputFileError(ValueError):
    """A file that cannot be what the job needs; the message names it and says why."""


@dataclass(frozen=True)
class FileInfo:
    kind: str  # image (Pillow), exr, hdr, npy, other
    width: int = 0
    height: int = 0
    pixels: int = 0  # decoded pixel count (all frames / all array elements per channel)

    @property
    def is_raster(self) -> bool:
        return self.kind != "other"


def inspect(path: str | Path, name: str | None = None) -> FileInfo:
    """Size and kind of one file from its header; ``InputFileError`` for a damaged header."""
    path = Path(path)
    name = name or path.name
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(NPY_MAGIC):
        return _npy(path, name)
    if head.startswith(EXR_MAGIC) or head.startswith(HDR_MAGICS):
        return _oiio(path, name, "exr" if head.startswith(EXR_MAGIC) else "hdr")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # header only
            w, h = im.size
            frames = getattr(im, "n_frames", 1)
    except UnidentifiedImageError:
        return FileInfo("other")
    except Image.DecompressionBombError as e:
        raise InputFileError(f"file {name!r} is an image too large to open safely: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputFileError(f"file {name!r} is not a readable image: {e}") from None
    return FileInfo("image", w, h, w * h * max(1, int(frames)))


def _npy(path: Path, name: str) -> FileInfo:
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)  # the header only
    except (ValueError, OSError) as e:
        raise InputFileError(f"file {name!r} is not a readable .npy array: {e}") from None
    h, w = (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0] if shape else 1)
    return FileInfo("npy", int(w), int(h), int(np.prod(shape[:2])) if len(shape) >= 2 else int(np.prod(shape)))


def _oiio(path: Path, name: str, kind: str) -> FileInfo:
    import OpenImageIO as oiio

    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise InputFileError(f"file {name!r} is not a readable {kind.upper()} image: {oiio.geterror()}")
    try:
        spec = inp.spec()
        w, h = spec.full_width or spec.width, spec.full_height or spec.height
        parts = 1
        while inp.seek_subimage(parts, 0):
            parts += 1
    finally:
        inp.close()
    return FileInfo(kind, w, h, w * h * parts)


def check_view_sizes(inputs: Path, views) -> None:
    """Every pass a view names has the view's width x height (a resized render, a pass of another view)."""
    wrong = []
    for v in views:
        for field in ("image", "alpha", "depth", "normal", "object_index"):
            name = getattr(v, field)
            if not name:
                continue
            info = inspect(inputs / name, name)
            if not info.is_raster:
                wrong.append(f"{v.name}.{field} ({name}) is not a readable image or .npy array")
            elif (info.width, info.height) != (v.width, v.height):
                wrong.append(f"{v.name}.{field} ({name}) is {info.width}x{info.height}, the view is {v.width}x{v.height}")
    if wrong:
        hint = "Re-export the rig (every pass at the view's size)"
        raise InputFileError("input files do not fit their views: " + "; ".join(wrong) + f". {hint}")
