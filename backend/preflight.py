"""Will a job fit the GPU? A memory estimate per task from measured peaks, and what to change when not.

The peaks are H100 measurements at the tasks' default sizes with a 21-frame SEVA window
(docs/performance.md: bf16 networks, fp32 VAE decoded one frame at a time). About half of each peak is
weights and fixed buffers; the other half grows with the pixels and frames of a window. Rough by
design: it is there to stop a run that cannot fit, and to say what would, before anything renders.
"""

from __future__ import annotations

# task -> (measured peak GiB, working short side it was measured at)
MEASURED = {
    "novel_views": (7.07, 576),
    "relight_text": (9.19, 576),
    "stylize": (10.8, 576),
    "relight_envmap": (9.41, 576),
    "spatial_edit": (10.3, 512),
}
WINDOW = 21
HEADROOM_GIB = 0.75  # the CUDA context and the allocator's slack


def memory_estimate_gib(task: str, size: int | None = None, window: int = WINDOW) -> float | None:
    """Peak GPU memory of a multi-view task at working short side ``size`` with ``window`` frames per SEVA call."""
    if task not in MEASURED:
        return None
    peak, at = MEASURED[task]
    scale = ((size or at) / at) ** 2 * (window / WINDOW)
    return peak * (0.5 + 0.5 * scale)


def advice(task: str, size: int | None, window: int, vram_gib: float) -> str | None:
    """None when the job fits ``vram_gib``, else what to lower (a working size or window that fits)."""
    need = memory_estimate_gib(task, size, window)
    if need is None or need + HEADROOM_GIB <= vram_gib:
        return None
    peak, at = MEASURED[task]
    room = (vram_gib - HEADROOM_GIB) / peak - 0.5  # the share that scales, as a fraction of the measured half
    if room <= 0:
        return f"{task} needs about {need:.1f} GiB of GPU memory; this GPU has {vram_gib:.1f} GiB, too little for it at any size"
    fit_size = int(at * (2 * room * WINDOW / window) ** 0.5) // 64 * 64
    fit_window = int(2 * room * WINDOW * (at / (size or at)) ** 2)
    options = []
    if fit_size >= 256:
        options.append(f"Working Size {fit_size}")
    if 4 <= fit_window < window:
        options.append(f"a window of {fit_window} frames")
    how = " or ".join(options) or "a GPU with more memory"
    return f"{task} needs about {need:.1f} GiB of GPU memory at this size; this GPU has {vram_gib:.1f} GiB: use {how}"
