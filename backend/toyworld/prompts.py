"""The toy relighting vocabulary: "<colour> light from the <direction>", relative to a camera.

A prompt names a sun colour and where the sun stands as seen from the camera: left/right (in the
image plane), front (behind the camera), back (behind the objects, a rim light) or top. Its
meaning in world space needs the camera, so the same prompt is a different world light for each
view: editing views one by one with one prompt is inconsistent by construction, which is what
coupling has to fix (the reference view's meaning wins).
"""

from __future__ import annotations

import math

import torch

from .scene import Lights

Tensor = torch.Tensor

COLOURS: dict[str, tuple[float, float, float]] = {
    "warm": (1.0, 0.62, 0.32),
    "cool": (0.45, 0.62, 1.0),
    "white": (0.95, 0.95, 0.95),
    "red": (1.0, 0.25, 0.2),
    "green": (0.35, 0.95, 0.35),
    "purple": (0.75, 0.35, 1.0),
}
# (azimuth relative to the camera's view direction, towards its right; elevation), degrees
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-90.0, 30.0),
    "right": (90.0, 30.0),
    "front": (180.0, 35.0),
    "back": (0.0, 30.0),
    "top": (0.0, 80.0),
}
INTENSITY = 2.2  # sun colour scale: a face turned to the light reaches albedo * 2.2 * colour
AMBIENT = 0.06


def prompt(colour: str, direction: str) -> str:
    return f"{colour} light from the {direction}"


def all_prompts() -> list[str]:
    return [prompt(c, d) for c in COLOURS for d in DIRECTIONS]


def parse(text: str) -> tuple[str, str]:
    """(colour, direction) of a vocabulary prompt; a clear error for anything else."""
    words = text.strip().lower().split()
    if len(words) == 5 and words[1:4] == ["light", "from", "the"] and words[0] in COLOURS and words[4] in DIRECTIONS:
        return words[0], words[4]
    raise ValueError(
        f"the toy relighting model knows prompts of the form '<colour> light from the <direction>' with colour in "
        f"{sorted(COLOURS)} and direction in {sorted(DIRECTIONS)}; got {text!r}"
    )


def camera_frame(c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal forward and right unit vectors of OpenCV cameras (..., 4, 4), world Z up."""
    fwd = c2w[..., :3, 2].clone()
    fwd[..., 2] = 0
    fwd = torch.nn.functional.normalize(fwd, dim=-1)
    right = torch.stack([fwd[..., 1], -fwd[..., 0], torch.zeros_like(fwd[..., 0])], -1)  # fwd turned -90 deg about Z
    return fwd, right


def light_for(text: str | list[str], c2w: Tensor, jitter: Tensor | None = None) -> Lights:
    """World lights (one per camera in ``c2w`` (N, 4, 4)) that the prompt means for each camera.

    ``text``: one prompt for every camera, or one per camera. ``jitter`` (N, 2) adds (azimuth,
    elevation) degrees, used for training variety.
    """
    n = c2w.shape[0]
    texts = [text] * n if isinstance(text, str) else list(text)
    if len(texts) != n:
        raise ValueError(f"{len(texts)} prompts for {n} cameras")
    parsed = [parse(t) for t in texts]
    az = torch.tensor([DIRECTIONS[d][0] for _, d in parsed])
    el = torch.tensor([DIRECTIONS[d][1] for _, d in parsed])
    if jitter is not None:
        az, el = az + jitter[:, 0], (el + jitter[:, 1]).clamp(12.0, 85.0)
    fwd, right = camera_frame(c2w.float())
    a, e = torch.deg2rad(az)[:, None], torch.deg2rad(el)[:, None]
    horiz = torch.cos(a) * fwd + torch.sin(a) * right
    # "back" = the light stands behind the objects, shining towards the camera: direction to the light = forward
    d = torch.cos(e) * horiz + torch.sin(e) * torch.tensor([0.0, 0.0, 1.0])
    col = torch.tensor([COLOURS[c] for c, _ in parsed]) * INTENSITY
    return Lights(d, col, torch.full((n, 3), AMBIENT))


def random_lights(n: int, g: torch.Generator) -> Lights:
    """Arbitrary suns (any azimuth, elevation 15-75 deg, random tint) for source renders."""
    az = torch.rand(n, generator=g) * 2 * math.pi
    el = torch.deg2rad(15 + 60 * torch.rand(n, generator=g))
    d = torch.stack([torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], -1)
    tint = 0.75 + 0.25 * torch.rand(n, 3, generator=g)
    col = tint / tint.amax(-1, keepdim=True) * (1.6 + 0.8 * torch.rand(n, 1, generator=g))
    amb = torch.full((n, 3), AMBIENT) * (0.5 + torch.rand(n, 1, generator=g))
    return Lights(d, col, amb)
