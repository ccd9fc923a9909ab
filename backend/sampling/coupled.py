"""Coupled diffusion sampling (paper Algorithm 1) in VE form — DESIGN §3.3.

Per step i (noise levels sigma_i -> sigma_{i+1} of each participant):
  1. every live participant predicts x0_hat = D(x, sigma_i);
  2. every participant takes its own step from its own x0_hat (DDPM/ancestral or Euler);
  3. every coupling (A, B, lam) pulls both next states toward the other's prediction:
        x_A <- x_A - w_A * (x0_A - x0_B),  w_A = sigma^A_{i+1} * lam
        x_B <- x_B - w_B * (x0_B - x0_A),  w_B = sigma^B_{i+1} * lam
     computed from the predictions of step 1 (simultaneous, no gradients).
lam = 0 is exactly the independent samplers. The paper's VP factor sqrt(1 - abar_{t-1}) becomes
sigma_{i+1} in VE form (tests/test_coupled_sampler.py checks this against diffusers' DDPM and DDIM
schedulers stepped in VP form).

Latents of different sizes (a 32² editor beside a 72² SEVA) are compared in the band both can
represent: the larger side A is pulled by ``up(down(x0_A) - x0_B)``, the smaller side B by
``x0_B - down(x0_A)``; detail only A can hold is never pulled toward B's blur.

``max_pull`` (ours) caps the total pull weight on each item, summed over all its couplings (an
item coupled to three prompts counts three pulls): past half the gap a symmetric pair would
overshoot and swap sides. It does bind: with SEVA's sigma up to 84.9 and lam 0.015, sigma_{i+1}*lam
exceeds 0.5 on the first 8 of 50 steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .denoisers import Denoiser
from .schedules import validate_schedule

Tensor = torch.Tensor
STEP_KINDS = ("ddpm", "euler")
ALIGNMENTS = ("step", "sigma")
JOINS = ("noise", "partner")


class Cancelled(RuntimeError):
    """Raised between steps when the caller's cancel check says so."""


@dataclass
class Participant:
    """One model's batch of latents taking part in a coupled run.

    ``shape`` is the state's shape, first dim = items (views, prompts, frames...).
    ``sigmas`` is the participant's native schedule (descending, final 0), needed for
    ``alignment="step"``, where a shorter schedule joins late so that all end together (an
    img2img editor running the last steps only); ``sigma_max`` of the denoiser bounds when it
    may join a shared grid. ``init``: start from this clean latent noised to the first sigma.
    ``seeds``: one seed for the whole batch, or one per item (noise drawn item by item, as
    diffusers does with a list of generators). ``noise_shape``/``noise_transform`` let a model
    draw its noise in another layout (Flux draws (B, C, H, W) then packs it into tokens).
    """

    name: str
    denoiser: Denoiser
    shape: tuple[int, ...]
    sigmas: Tensor | None = None
    seeds: int | Sequence[int] = 0
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"
    noise_shape: tuple[int, ...] | None = None
    noise_transform: Callable[[Tensor], Tensor] | None = None
    init: Tensor | None = None  # clean latent to start from (img2img): x = init + sigma_start * eps

    def generators(self) -> list[torch.Generator]:
        seeds = [self.seeds] if isinstance(self.seeds, int) else list(self.seeds)
        if not isinstance(self.seeds, int) and len(seeds) != self.shape[0]:
            raise ValueError(f"participant {self.name!r}: {len(seeds)} seeds for {self.shape[0]} items")
        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def randn(self, gens: list[torch.Generator]) -> Tensor:
        """Unit Gaussian noise in the state's layout, drawn on the CPU so every device agrees."""
        shape = self.noise_shape or self.shape
        if len(gens) == 1:
            raw = torch.randn(shape, generator=gens[0], dtype=self.dtype)
        else:
            raw = torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=self.dtype) for g in gens])
        raw = raw.to(self.device)
        return self.noise_transform(raw) if self.noise_transform else raw


@dataclass
class Coupling:
    """Links items ``items_a`` of participant ``a`` to items ``items_b`` of ``b`` with strength ``lam``.

    ``b_to_a`` maps B's x0 into A's latent layout (and ``a_to_b`` back) when they differ,
    e.g. a resize between a 256² editor and a 576² multi-view model. ``a`` may equal ``b``
    (two prompts batched through one network) as long as the linked items differ.
    """

    a: str
    b: str
    lam: float
    items_a: Sequence[int] | None = None
    items_b: Sequence[int] | None = None
    b_to_a: Callable[[Tensor], Tensor] | None = None
    a_to_b: Callable[[Tensor], Tensor] | None = None


@dataclass
class StepInfo:
    """Passed to the progress callback after every step."""

    step: int  # 1-based number of the step just finished
    total: int
    sigmas: dict[str, float]  # each live participant's sigma before this step
    x0: dict[str, Tensor]  # each live participant's prediction at this step (for previews)
    elapsed_s: float


@dataclass
class CoupledSample:
    latents: dict[str, Tensor]
    joined_at: dict[str, int] = field(default_factory=dict)  # step index where each participant started
    join_source: dict[str, str] = field(default_factory=dict)  # "noise" or "partner:<name>"


def eps_from(x: Tensor, x0: Tensor, sigma: float) -> Tensor:
    """Noise direction of the state; at sigma = inf the state already stores x/sigma = eps."""
    return x if math.isinf(sigma) else (x - x0) / sigma


def ancestral_sigmas(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """Split sigma_next into a deterministic part (down) and fresh noise (up); eta=1 is DDPM."""
    if sigma_next == 0.0 or eta == 0.0:
        return sigma_next, 0.0
    ratio = 1.0 if math.isinf(sigma) else (sigma**2 - sigma_next**2) / sigma**2
    up = min(sigma_next, eta * sigma_next * math.sqrt(max(ratio, 0.0)))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


def ve_step(x: Tensor, x0: Tensor, sigma: float, sigma_next: float, eta: float, noise: Tensor | None) -> Tensor:
    """One ordinary step from x0_hat: x' = x0 + sigma_down * eps_hat + sigma_up * z.

    eta = 1 is the DDPM posterior q(x_{t-1} | x_t, x0) written in VE form; eta = 0 is the
    Euler/EDM (= DDIM) step.
    """
    if sigma_next == 0.0:
        return x0.clone()
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    out = x0 + down * eps_from(x, x0, sigma)
    if up > 0.0:
        if noise is None:
            raise ValueError("a stochastic step needs noise")
        out = out + up * noise
    return out


def _check_inputs(participants: Sequence[Participant], couplings: Sequence[Coupling], step: str, alignment: str, join: str) -> None:
    if step not in STEP_KINDS:
        raise ValueError(f"step must be one of {STEP_KINDS}, got {step!r}")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if join not in JOINS:
        raise ValueError(f"join must be one of {JOINS}, got {join!r}")
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise ValueError(f"participant names must be unique, got {names}")
    for c in couplings:
        for n in (c.a, c.b):
            if n not in names:
                raise ValueError(f"coupling refers to unknown participant {n!r}; known: {names}")
        if c.lam < 0 or not math.isfinite(c.lam):
            raise ValueError(f"coupling {c.a}<->{c.b}: lam must be a finite number >= 0, got {c.lam}")
        ia, ib = c.items_a, c.items_b
        if (ia is None) != (ib is None) or (ia is not None and len(ia) != len(ib)):
            raise ValueError(f"coupling {c.a}<->{c.b}: items_a and items_b must both be given, with equal lengths")
        if c.a == c.b and (ia is None or any(i == j for i, j in zip(ia, ib, strict=True))):
            raise ValueError(f"coupling {c.a}<->{c.b}: a participant may only be coupled to other items of itself")


def _grids(
    participants: Sequence[Participant], alignment: str, sigmas: Tensor | None
) -> tuple[int, dict[str, list[float]], dict[str, int]]:
    """Per participant, the sigma at every global step (None before it joins) and its join step."""
    grids: dict[str, list[float]] = {}
    start: dict[str, int] = {}
    if alignment == "step":
        for p in participants:
            if p.sigmas is None:
                raise ValueError(f"alignment='step' needs a native schedule for participant {p.name!r}")
            validate_schedule(p.sigmas, f"participant {p.name!r}")
        n = max(len(p.sigmas) for p in participants) - 1
        for p in participants:
            start[p.name] = n - (len(p.sigmas) - 1)  # shorter schedules join late and end with the rest
            grids[p.name] = [math.nan] * start[p.name] + [float(s) for s in p.sigmas]
        return n, grids, start
    if sigmas is None:
        raise ValueError("alignment='sigma' needs the shared schedule `sigmas`")
    validate_schedule(sigmas, "shared schedule")
    shared = [float(s) for s in sigmas]
    for p in participants:
        limit = float(p.denoiser.sigma_max) * (1 + 1e-6)
        first = next((i for i, s in enumerate(shared[:-1]) if s <= limit), None)
        if first is None:
            raise ValueError(f"participant {p.name!r} (sigma_max {p.denoiser.sigma_max:.4g}) never joins the shared schedule")
        grids[p.name] = shared
        start[p.name] = first
    return len(shared) - 1, grids, start


def _items(t: Tensor, idx: Sequence[int] | None) -> Tensor:
    return t if idx is None else t[list(idx)]


def sample_coupled(
    participants: Sequence[Participant],
    couplings: Sequence[Coupling] = (),
    *,
    step: str = "ddpm",
    eta: float | None = None,
    alignment: str = "step",
    sigmas: Tensor | None = None,
    join: str = "noise",
    max_pull: float | None = 0.5,
    callback: Callable[[StepInfo], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    overlap: bool = False,
) -> CoupledSample:
    """Run all participants jointly; returns every participant's final (sigma = 0) latent.

    ``overlap``: on CUDA, each participant after the first predicts on a stream of its own, so the
    GPU can run two networks' kernels side by side (same results; a speed mode, bench/speed_modes.py)."""
    _check_inputs(participants, couplings, step, alignment, join)
    eta = (1.0 if step == "ddpm" else 0.0) if eta is None else float(eta)
    n_steps, grids, start = _grids(participants, alignment, sigmas)
    by_name = {p.name: p for p in participants}
    gens = {p.name: p.generators() for p in participants}
    state: dict[str, Tensor] = {}
    last_x0: dict[str, Tensor] = {}
    result = CoupledSample(latents={}, joined_at=dict(start))
    t0 = time.perf_counter()

    for i in range(n_steps):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled before step {i + 1} of {n_steps}")
        # 0. participants whose range starts here join (always at i = 0 with alignment='step')
        for p in participants:
            if start[p.name] == i:
                sigma = grids[p.name][i]
                eps = p.randn(gens[p.name])
                partner = _partner_x0(p.name, couplings, last_x0) if join == "partner" else None
                if p.init is not None:
                    if math.isinf(sigma):
                        raise ValueError(f"participant {p.name!r}: an init latent needs a finite first sigma (img2img strength < 1)")
                    state[p.name] = p.init.to(p.device, p.dtype) + sigma * eps
                    result.join_source[p.name] = "init"
                elif partner is not None and not math.isinf(sigma):
                    src, x0_init = partner
                    state[p.name] = x0_init.to(p.dtype) + sigma * eps
                    result.join_source[p.name] = f"partner:{src}"
                else:
                    scale = p.denoiser.prior_scale(sigma)
                    state[p.name] = eps * scale
                    result.join_source[p.name] = "noise"
        live = [p for p in participants if p.name in state]
        # 1. predictions
        if overlap and len(live) > 1 and all(state[p.name].is_cuda for p in live):
            x0 = _predict_on_streams(live, state, grids, i)
        else:
            x0 = {p.name: p.denoiser(state[p.name], grids[p.name][i]).to(p.dtype) for p in live}
        # 2. ordinary steps
        nxt = {}
        for p in live:
            s, s_next = grids[p.name][i], grids[p.name][i + 1]
            _, up = ancestral_sigmas(s, s_next, eta)
            noise = p.randn(gens[p.name]) if up > 0.0 else None
            nxt[p.name] = ve_step(state[p.name], x0[p.name], s, s_next, eta, noise)
        # 3. coupling corrections, all from this step's predictions, each item's total weight capped
        pulls: dict[str, Tensor] = {}
        weights: dict[str, Tensor] = {}
        for c in couplings:
            if c.lam == 0.0 or c.a not in x0 or c.b not in x0:
                continue
            da, db = coupling_gaps(c, _items(x0[c.a], c.items_a), _items(x0[c.b], c.items_b))
            for name, idx, gap in ((c.a, c.items_a, da), (c.b, c.items_b, db)):
                w = grids[name][i + 1] * c.lam
                _accumulate(pulls, weights, name, idx, w * gap, w, x0[name])
        for name, pull in pulls.items():
            w = weights[name]
            scale = torch.ones_like(w) if max_pull is None else (max_pull / w.clamp_min(1e-30)).clamp(max=1.0)
            nxt[name] = nxt[name] - pull * scale.view(-1, *[1] * (pull.dim() - 1)).to(pull.dtype)
        state.update(nxt)
        last_x0 = x0
        if callback is not None:
            callback(StepInfo(i + 1, n_steps, {p.name: grids[p.name][i] for p in live}, x0, time.perf_counter() - t0))

    result.latents = {name: state[name] for name in by_name}
    return result


_SIDE_STREAMS: dict[tuple[torch.device, int], torch.cuda.Stream] = {}


def _predict_on_streams(live: Sequence[Participant], state: dict, grids: dict, i: int) -> dict[str, Tensor]:
    """Every participant's x0 prediction, the first on the current stream, the others on side streams."""
    main = torch.cuda.current_stream()
    first = live[0]
    out = {first.name: first.denoiser(state[first.name], grids[first.name][i]).to(first.dtype)}
    sides = []
    for k, p in enumerate(live[1:], start=1):
        dev = state[p.name].device
        side = _SIDE_STREAMS.setdefault((dev, k), torch.cuda.Stream(device=dev))
        side.wait_stream(main)  # its input was written on the main stream
        with torch.cuda.stream(side):
            x0 = p.denoiser(state[p.name], grids[p.name][i]).to(p.dtype)
        x0.record_stream(main)  # made on the side stream, used (and freed) on the main one
        out[p.name] = x0
        sides.append(side)
    for side in sides:
        main.wait_stream(side)
    return out


def coupling_gaps(c: Coupling, xa: Tensor, xb: Tensor) -> tuple[Tensor, Tensor]:
    """What each side of a coupling is pulled by (before its weight), in its own layout.

    Equal layouts: the plain difference. Different sizes (both resampling operators given): compared
    in the band both can represent, so the larger side keeps the detail the smaller cannot hold."""
    if c.a_to_b is not None and c.b_to_a is not None and xa[0].numel() != xb[0].numel():
        if xa[0].numel() > xb[0].numel():
            shared = c.a_to_b(xa) - xb.to(xa.device)  # in B's (smaller) layout
            return c.b_to_a(shared), (-shared).to(xb.device)
        shared = c.b_to_a(xb) - xa.to(xb.device)  # in A's (smaller) layout
        return (-shared).to(xa.device), c.a_to_b(shared)
    target_a = c.b_to_a(xb) if c.b_to_a else xb
    target_b = c.a_to_b(xa) if c.a_to_b else xa
    if target_a.shape != xa.shape or target_b.shape != xb.shape:
        raise ValueError(
            f"coupling {c.a}<->{c.b}: latent shapes {tuple(xa.shape)} and {tuple(xb.shape)} differ; give b_to_a/a_to_b resampling"
        )
    return xa - target_a.to(xa.device), xb - target_b.to(xb.device)


def _accumulate(pulls: dict[str, Tensor], weights: dict[str, Tensor], name: str, idx, pull: Tensor, w: float, like: Tensor) -> None:
    """Add one coupling's weighted pull (and its weight, per item) to a participant's totals."""
    if name not in pulls:
        pulls[name] = torch.zeros_like(like)
        weights[name] = torch.zeros(like.shape[0], dtype=torch.float64, device=like.device)
    if idx is None:
        pulls[name] += pull.to(like.dtype)
        weights[name] += w
    else:  # index_add_: an item listed twice gets both pulls
        rows = torch.as_tensor(list(idx), device=like.device)
        pulls[name].index_add_(0, rows, pull.to(like.dtype))
        weights[name].index_add_(0, rows, torch.full((len(rows),), float(w), dtype=torch.float64, device=like.device))


def _partner_x0(name: str, couplings: Sequence[Coupling], last_x0: dict[str, Tensor]) -> tuple[str, Tensor] | None:
    """The latest prediction of a coupled partner, mapped into this participant's layout."""
    for c in couplings:
        if c.a == name and c.b in last_x0 and c.b != name and c.items_a is None:
            x = last_x0[c.b] if c.items_b is None else last_x0[c.b][list(c.items_b)]
            return c.b, (c.b_to_a(x) if c.b_to_a else x)
        if c.b == name and c.a in last_x0 and c.a != name and c.items_b is None:
            x = last_x0[c.a] if c.items_a is None else last_x0[c.a][list(c.items_a)]
            return c.a, (c.a_to_b(x) if c.a_to_b else x)
    return None
