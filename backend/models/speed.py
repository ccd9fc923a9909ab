"""Speed modes for the big networks of a job (SEVA's network, the editor's UNet): the job spec's
``models.speed`` (#17, docs/performance.md "Speed modes").

- ``eager``: the networks as loaded.
- ``fp8``: their linear layers in fp8 e4m3 (``backend.models.fp8``). Measured slower on an H200
  (0.82 vs 0.48 s per coupled step: the activation scaling is extra memory passes) at 2e-2 error:
  opt-in, kept for GPUs and shapes where the GEMMs dominate.
- ``compile``: ``torch.compile``; its artefacts are kept on disk (``backend.compile_cache``), so only
  the first process on a machine pays the whole compile; later ones load them and trace only.
- ``compile-fp8``: both (on the H200 level with ``compile``, not faster).
- ``compile-regional``: ``torch.compile`` on each repeated block (SEVA's ResBlock and
  MultiviewTransformer, diffusers' ResnetBlock2D and Transformer2DModel) instead of the whole network:
  blocks of one class and shape share one compiled graph (tests/test_compile_regions.py), so less is
  traced and compiled. Meant to keep most of ``compile``'s gain at a warm-up inside the 30 s budget;
  artefacts kept on disk like ``compile``'s. Not yet measured on a GPU (docs/performance.md).
- ``auto``: the fastest mode measured to stay within bf16's own error *and* the 30 s warm-up budget
  on the job's device: ``eager`` everywhere. On the H200 compile is 15-19 % faster with an error
  inside bf16's run-to-run noise, but its warm-up is 237 s on a machine's first process and 57 s on
  every later one (docs/performance.md, "Second H200 measurement").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

SPEED_MODES = ("auto", "eager", "fp8", "compile", "compile-fp8", "compile-regional")
# dynamo compiles a block class once per input shape it meets; a network has a few per class
REGION_RECOMPILE_LIMIT = 64


def resolve(mode: str, device: torch.device | str) -> str:
    """The mode a job runs in: ``auto`` becomes a concrete one for the device (see the module's note)."""
    if mode not in SPEED_MODES:
        raise ValueError(f"unknown speed mode {mode!r}; choose one of {', '.join(SPEED_MODES)}")
    return "eager" if mode == "auto" else mode


@dataclass
class SpedUp:
    """What ``speed_up`` did: for the job's log, and the compile caches to save once the job has run."""

    mode: str
    fp8_layers: int = 0
    regions: int = 0
    caches: list = field(default_factory=list)  # backend.compile_cache.CompileCache
    loaded_artefacts: int = 0

    def describe(self, name: str) -> str:
        parts = [f"{name}: speed mode {self.mode}"]
        if "fp8" in self.mode:
            parts.append(f"{self.fp8_layers} linear layers in fp8 (measured no faster than bf16 on an H200, docs/performance.md)")
        if self.regions:
            parts.append(f"{self.regions} blocks compiled one by one (one graph per block class and shape)")
        if "compile" in self.mode:
            parts.append(
                f"compiled artefacts loaded ({self.loaded_artefacts}): tracing only"
                if self.loaded_artefacts
                else "compiling for this machine: the first steps take minutes, once per machine"
            )
        return "; ".join(parts)


# torch keeps compile artefacts per process, and one save writes all of them: so one file per mode
# (not per network), loaded into a process once
_LOADED: dict[str, int] = {}


def speed_up(module: torch.nn.Module, mode: str, name: str, say: Callable[[str], None] | None = None) -> tuple[torch.nn.Module, SpedUp]:
    """``module`` in ``mode`` (already resolved): converted in place for fp8, wrapped for compile (its
    blocks compiled in place for compile-regional)."""
    from ..compile_cache import CompileCache

    done = SpedUp(mode)
    if "fp8" in mode:
        from .fp8 import to_fp8

        done.fp8_layers = to_fp8(module)
    if "compile" in mode:
        cache = CompileCache(f"models-{mode}")
        if str(cache.path) not in _LOADED:
            _LOADED[str(cache.path)] = cache.load()
        done.loaded_artefacts = _LOADED[str(cache.path)]
        done.caches.append(cache)
        if mode == "compile-regional":
            done.regions = compile_regions(module)
        else:
            module = torch.compile(module)
    if say is not None and mode != "eager":
        say(done.describe(name))
    return module, done


def region_classes() -> tuple[type, ...]:
    """The repeated blocks of the networks speed modes reach: where a step's time goes."""
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from .seva.network import MultiviewTransformer, ResBlock

    return ResBlock, MultiviewTransformer, ResnetBlock2D, Transformer2DModel


def compile_regions(module: torch.nn.Module, backend: str = "inductor") -> int:
    """Compiles every outermost region block of ``module`` in place (``nn.Module.compile``: the
    state-dict keys stay as they are); returns how many. Blocks of one class share compiled code:
    dynamo inlines the module, so its parameters are graph inputs, not constants. ``backend``: the
    compiler dynamo hands each graph to (tests use ``aot_eager``: the same graphs, no code generation)."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), REGION_RECOMPILE_LIMIT))
    classes = region_classes()
    count = 0

    def visit(m: torch.nn.Module) -> None:
        nonlocal count
        for child in m.children():
            if isinstance(child, classes):
                child.compile(dynamic=False, backend=backend)
                count += 1
            else:
                visit(child)

    visit(module)
    return count
