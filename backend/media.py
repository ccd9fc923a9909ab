"""Writing images and videos: per-sample files plus captioned side-by-side comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    import torch


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [0, 1] (..., H, W, 3) -> uint8, rounding to nearest."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def caption(img: Image.Image, text: str, height: int = 14) -> Image.Image:
    """The image with a caption strip under it (PIL's built-in font, so no font files are needed)."""
    out = Image.new("RGB", (img.width, img.height + height), (24, 24, 24))
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((3, img.height + 1), text[: max(1, img.width // 6)], fill=(235, 235, 235))
    return out


def side_by_side(images: Sequence[Image.Image], captions: Sequence[str] | None = None, gap: int = 4, footer: str = "") -> Image.Image:
    tiles = [caption(im, c) for im, c in zip(images, captions, strict=True)] if captions else list(images)
    w = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    h = max(t.height for t in tiles)
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + gap
    return caption(canvas, footer) if footer else canvas


def write_video(path: Path, frames: np.ndarray, fps: int = 16) -> Path:
    """uint8 (F, H, W, 3) -> MP4 (H.264 via imageio-ffmpeg's bundled ffmpeg)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    # H.264 wants even sides; pad by edge replication instead of resizing
    f, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1, ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def read_video(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return np.stack([np.asarray(f) for f in reader])


def load_image(path: Path) -> torch.Tensor:
    """PNG/JPEG -> (3, H, W) float in [-1, 1]; alpha composited over white (SEVA's convention)."""
    import torch

    im = Image.open(path).convert("RGBA")
    a = np.asarray(im, dtype=np.float32) / 255.0
    rgb = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    return torch.from_numpy(rgb).permute(2, 0, 1) * 2.0 - 1.0


def tensor_to_pil(img) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image, clamped and rounded."""
    arr = ((img.detach().float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(to_uint8(arr))


def save_image(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
