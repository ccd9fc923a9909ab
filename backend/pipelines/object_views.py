"""Object-centred square crops of rendered views, and pasting results back into the full frame.

Neural Gaffer sees the object centred on white with its longer side filling 75 % of a square
(the reference's in-the-wild preprocessing, research/neuralgaffer.md §2, step 4). Rendered views
carry the exact alpha, so the crop comes from it and no segmentation network is needed. The
crop is a square of the full frame (it may reach past the frame: transparent there), so the
camera of the crop is the view's camera with the principal point shifted: SEVA can work on the
same crops and its frames line up with the editor's pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FILL = 0.75


@dataclass(frozen=True)
class Crop:
    left: int  # full-frame pixel of the square's top-left corner (may be negative)
    top: int
    side: int


def object_crop(alpha: np.ndarray) -> Crop:
    ys, xs = np.nonzero(alpha > 0)
    if len(xs) == 0:
        raise ValueError("the view shows no object (alpha is 0 everywhere): render it with the object in frame")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = int(x1 - x0), int(y1 - y0)
    side = max(int(max(w, h) / FILL), 1)
    return Crop(int(x0) - (side // 2 - w // 2), int(y0) - (side // 2 - h // 2), side)


def crop_rgba(rgba: np.ndarray, c: Crop) -> np.ndarray:
    """The square (side, side, 4) of the frame, transparent where it reaches past the frame."""
    H, W = rgba.shape[:2]
    out = np.zeros((c.side, c.side, rgba.shape[2]), dtype=rgba.dtype)
    fx0, fy0 = max(c.left, 0), max(c.top, 0)
    fx1, fy1 = min(c.left + c.side, W), min(c.top + c.side, H)
    out[fy0 - c.top : fy1 - c.top, fx0 - c.left : fx1 - c.left] = rgba[fy0:fy1, fx0:fx1]
    return out


def crop_K(K: np.ndarray, c: Crop) -> np.ndarray:
    K2 = np.array(K, dtype=np.float64)
    K2[0, 2] -= c.left
    K2[1, 2] -= c.top
    return K2


def on_white(rgba: np.ndarray, size: int = 256) -> np.ndarray:
    """Square RGBA (0..255) -> (size, size, 3) uint8 on white: Lanczos resize (alpha-premultiplied
    by Pillow), then rgb * a + 255 * (1 - a), truncated."""
    from PIL import Image

    im = Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")
    if im.size != (size, size):
        im = im.resize((size, size), Image.LANCZOS)
    a = np.asarray(im, dtype=np.float64) / 255.0
    return (a[..., :3] * a[..., 3:] * 255.0 + (1.0 - a[..., 3:]) * 255.0).astype(np.uint8)


def paste_back(image: np.ndarray, c: Crop, alpha: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """A result for the square crop (S, S, 3 uint8, any S) back into the full frame (H, W, 4 uint8).

    Composited with the view's own alpha over ``background`` (H, W, 3 uint8), or left transparent
    outside the object when there is none."""
    from PIL import Image

    H, W = alpha.shape
    sq = np.asarray(Image.fromarray(image).resize((c.side, c.side), Image.BICUBIC), dtype=np.float64)
    full = np.zeros((H, W, 3))
    fx0, fy0 = max(c.left, 0), max(c.top, 0)
    fx1, fy1 = min(c.left + c.side, W), min(c.top + c.side, H)
    full[fy0:fy1, fx0:fx1] = sq[fy0 - c.top : fy1 - c.top, fx0 - c.left : fx1 - c.left]
    a = (alpha.astype(np.float64) / 255.0)[..., None]
    if background is None:
        return np.dstack([np.clip(full, 0, 255), alpha]).astype(np.uint8)
    rgb = full * a + background.astype(np.float64) * (1 - a)
    return np.dstack([np.clip(rgb, 0, 255), np.full((H, W), 255.0)]).astype(np.uint8)
