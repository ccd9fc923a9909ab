"""SEVA image preprocessing (research/seva.md §2, §5): resize/crop/pad with K, CLIP input.

Images are float tensors in [-1, 1], (N, 3, h, w). K is (N, 3, 3), pixel or normalised
(normalised = both principal-point entries in [0, 1], the reference's own test).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def is_normalised(K: Tensor) -> bool:
    c = K[..., :2, 2]
    return bool(((c >= 0) & (c <= 1)).all())


def size_with_short_side(w: int, h: int, size: int | None) -> tuple[int, int]:
    """(w, h) with the short side = size and the long side int(size * long / short); size <= 0 or None: unchanged."""
    if not size or size <= 0:
        return w, h
    if w < h:
        return size, int(size * h / w)
    return int(size * w / h), size


def target_size(w: int, h: int, size: tuple[int, int] | int, stride: int = 1) -> tuple[int, int]:
    """(W, H) of the output: a (W, H) tuple, or an int short side; each rounded to a multiple of stride."""
    W, H = size if isinstance(size, (tuple, list)) else size_with_short_side(w, h, int(size))
    return int(math.floor(W / stride + 0.5) * stride), int(math.floor(H / stride + 0.5) * stride)


def resizing_factor(target_hw: tuple[int, int], current_hw: tuple[int, int], cover_target: bool = True) -> float:
    """Scale that makes the image cover (crop mode) or fit inside (pad mode) the target."""
    (H, W), (h, w) = target_hw, current_hw
    fh, fw = H / h, W / w
    return max(fh, fw) if cover_target else min(fh, fw)


def transform_K(
    K: Tensor, in_hw: tuple[int, int], size: tuple[int, int] | int, mode: str = "crop", size_stride: int = 1
) -> tuple[Tensor, tuple[int, int]]:
    """Only the geometry of :func:`transform_img_and_K`: the pixel K of the output and its (H, W)."""
    img, K = transform_img_and_K(torch.zeros(1, 1, *in_hw), size, K, mode, size_stride)
    return K, tuple(img.shape[-2:])


def working_size(K: Tensor, in_hw: tuple[int, int], size: tuple[int, int] | int, mode: str = "crop") -> tuple[int, int]:
    """SEVA's (H, W) for a view: an int is the short side (long side to a multiple of 64), a tuple is (W, H).

    Both sides must be multiples of 64: the UNet downsamples the latents three times.
    """
    stride = 64 if isinstance(size, int) else 1
    _, (H, W) = transform_K(K.reshape(1, 3, 3).float(), in_hw, size, mode, stride)
    if H % 64 or W % 64:
        raise ValueError(f"SEVA's working size must be a multiple of 64 on both sides (its UNet downsamples latents 3 times); got {W}x{H}")
    return H, W


def transform_img_and_K(
    image: Tensor, size: tuple[int, int] | int, K: Tensor | None = None, mode: str = "crop", size_stride: int = 1
) -> tuple[Tensor, Tensor | None]:
    """Area-resize to cover/fit (W, H), centre-crop or zero-pad, and move K with it (pixel K out)."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    h, w = image.shape[-2:]
    W, H = target_size(w, h, size, size_stride)
    f = resizing_factor((H, W), (h, w), cover_target=mode == "crop")
    rh, rw = math.ceil(f * h), math.ceil(f * w)
    image = F.interpolate(image, size=(rh, rw), mode="area")
    if mode == "crop":
        top = min(max(int(0.5 * rh) - H // 2, 0), rh - H)
        left = min(max(int(0.5 * rw) - W // 2, 0), rw - W)
        image = image[..., top : top + H, left : left + W]
        dx, dy = -left, -top
    else:
        top = max(0, H // 2 - int(0.5 * rh))
        left = max(0, W // 2 - int(0.5 * rw))
        # like the reference, never crop in pad mode: a one-pixel overshoot of ceil() stays in the output
        image = F.pad(image, (left, max(0, W - rw - left), top, max(0, H - rh - top)))
        dx, dy = left, top
    if K is None:
        return image, None
    K = K.clone().to(torch.float32)
    if is_normalised(K):
        K[..., 0, :] *= rw
        K[..., 1, :] *= rh
    else:
        K[..., 0, :] *= rw / w
        K[..., 1, :] *= rh / h
    K[..., 0, 2] += dx
    K[..., 1, 2] += dy
    return image, K


def _gaussian_kernel(sigma: float) -> Tensor:
    k = int(max(4 * sigma, 3))
    k += 1 - k % 2
    x = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_axis(x: Tensor, kernel: Tensor, dim: int) -> Tensor:
    """Separable 1-D convolution along H (dim=-2) or W (dim=-1) with reflect borders."""
    k = len(kernel)
    pad = k // 2
    c = x.shape[1]
    if dim == -1:
        x = F.pad(x, (pad, pad, 0, 0), mode="reflect")
        weight = kernel.view(1, 1, 1, k).expand(c, 1, 1, k)
    else:
        x = F.pad(x, (0, 0, pad, pad), mode="reflect")
        weight = kernel.view(1, 1, k, 1).expand(c, 1, k, 1)
    return F.conv2d(x, weight.to(x), groups=c)


def clip_preprocess(image: Tensor, size: int = CLIP_SIZE) -> Tensor:
    """[-1, 1] images -> CLIP ViT-H/14 input: antialiased bicubic squash to 224², then CLIP mean/std."""
    x = image.to(torch.float32)
    h, w = x.shape[-2:]
    fh, fw = h / size, w / size
    if max(fh, fw) > 1:
        # Gaussian pre-blur sized by the downscale factor of each axis (identity-like when upscaling)
        x = _blur_axis(x, _gaussian_kernel(max((fh - 1) / 2, 0.001)), -2)
        x = _blur_axis(x, _gaussian_kernel(max((fw - 1) / 2, 0.001)), -1)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
