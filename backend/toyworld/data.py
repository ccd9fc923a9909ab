"""Training and evaluation batches made on the fly: views, relighting pairs and multi-view windows.

Images are display values in [0, 1] composited on IC-Light's grey (127/255) from exact alpha, the
way the editors and SEVA see rendered views in a relight job; the VAE works on ``x * 2 - 1``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from . import cameras, prompts
from .render import render, srgb
from .scene import Lights, Scenes, random_scenes

Tensor = torch.Tensor
GREY = 127.0 / 255.0
SIZE = 128
FOV = 40.0


def straight(rgb: Tensor, alpha: Tensor) -> Tensor:
    """Display colour of the covered part of each pixel (un-premultiplied, as Blender writes RGBA)."""
    return srgb(rgb / alpha.clamp(min=1e-6))


def composite(rgb: Tensor, alpha: Tensor) -> Tensor:
    """Linear radiance (premultiplied by coverage) -> display image on grey, (N, 3, H, W) in [0, 1]."""
    return straight(rgb, alpha) * alpha + GREY * (1 - alpha)


def draw_scenes(n: int, g: torch.Generator) -> Scenes:
    return random_scenes(n, seed=int(torch.randint(2**31 - 1, (1,), generator=g)))


def shot(scenes: Scenes, lights: Lights, c2w: Tensor, size: int = SIZE, device: str | torch.device = "cpu") -> Tensor:
    """Display images of one view per entry (scenes/lights/c2w indexed alike)."""
    K = cameras.intrinsics(FOV, size, size).expand(len(c2w), 3, 3)
    r = render(scenes.to(device), lights.to(device), K.to(device), c2w.to(device), size, size)
    return composite(r.rgb, r.alpha)


def views(n: int, g: torch.Generator, size: int = SIZE, device="cpu") -> Tensor:
    """Single views of random scenes under random or vocabulary lights (VAE training)."""
    scenes = draw_scenes(n, g)
    c2w = cameras.random_rigs(n, 1, g)[:, 0]
    return shot(scenes, mixed_lights(c2w, g), c2w, size, device)


def mixed_lights(c2w: Tensor, g: torch.Generator, vocab_p: float = 0.5) -> Lights:
    """Half vocabulary lights (jittered) for these cameras, half arbitrary suns."""
    n = len(c2w)
    vocab, _ = vocabulary_lights(c2w, g)
    free = prompts.random_lights(n, g)
    pick = (torch.rand(n, generator=g) < vocab_p)[:, None]
    return Lights(*(torch.where(pick, a, b) for a, b in zip(_fields(vocab), _fields(free), strict=True)))


def _fields(lights: Lights) -> tuple[Tensor, Tensor, Tensor]:
    return lights.direction, lights.colour, lights.ambient


def vocabulary_lights(c2w: Tensor, g: torch.Generator, jitter: bool = True) -> tuple[Lights, list[str]]:
    """A random vocabulary prompt per camera and the (jittered) world light it means there."""
    rng = random.Random(int(torch.randint(2**31 - 1, (1,), generator=g)))
    texts = [rng.choice(prompts.all_prompts()) for _ in range(len(c2w))]
    jit = torch.randn(len(c2w), 2, generator=g) * torch.tensor([12.0, 6.0]) if jitter else None
    return prompts.light_for(texts, c2w, jit), texts


@dataclass
class RelightPairs:
    source: Tensor  # (n, 3, H, W) the view under some light
    target: Tensor  # (n, 3, H, W) the same view under the prompt's light
    prompts: list[str]


def relight_pairs(n: int, g: torch.Generator, size: int = SIZE, device="cpu") -> RelightPairs:
    scenes = draw_scenes(n, g)
    c2w = cameras.random_rigs(n, 1, g)[:, 0]
    src = mixed_lights(c2w, g)
    tgt, texts = vocabulary_lights(c2w, g)
    both = shot(
        scenes.index(torch.cat([torch.arange(n), torch.arange(n)])),
        Lights(*(torch.cat([a, b]) for a, b in zip(_fields(src), _fields(tgt), strict=True))),
        torch.cat([c2w, c2w]),
        size,
        device,
    )
    return RelightPairs(both[:n], both[n:], texts)


@dataclass
class Windows:
    images: Tensor  # (b, T, 3, H, W)
    c2w: Tensor  # (b, T, 4, 4) OpenCV
    K: Tensor  # (b, T, 3, 3) pixels


def windows(b: int, T: int, g: torch.Generator, size: int = SIZE, device="cpu") -> Windows:
    """b scenes seen by T cameras each under one light per scene (SEVA training)."""
    scenes = draw_scenes(b, g)
    c2w = cameras.random_rigs(b, T, g)
    light = mixed_lights(c2w[:, 0], g)
    rows = torch.arange(b).repeat_interleave(T)
    imgs = shot(scenes.index(rows), light.index(rows), c2w.reshape(-1, 4, 4), size, device)
    K = cameras.intrinsics(FOV, size, size).expand(b, T, 3, 3)
    return Windows(imgs.reshape(b, T, 3, size, size), c2w, K)
