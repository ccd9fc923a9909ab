"""The coupled sampler's math, checked on analytic Gaussian participants and against diffusers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussians import ScriptedParticipant, gaussian_denoiser
from shared_fixtures import fixture_dir

from backend.sampling import (
    Cancelled,
    Coupling,
    DiscreteDenoiser,
    EDMDenoiser,
    FlowDenoiser,
    Participant,
    resize_latents,
    sample_coupled,
    schedules,
)

D = 3  # dimensions per participant
MU_A, VAR_A = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64), torch.tensor([0.25, 1.0, 2.25], dtype=torch.float64)
MU_B, VAR_B = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64)


def make(cls=Participant, name="A", mu=MU_A, var=VAR_A, sigmas=None, sigma_max=math.inf, items=1, seed=0):
    return cls(
        name=name,
        denoiser=gaussian_denoiser(mu, var, sigma_max),
        shape=(items, D),
        sigmas=sigmas,
        seeds=seed,
        dtype=torch.float64,
    )


# --- an independent recursion: each state is affine in the vector xi of all injected noise ----


class Affine:
    """x = A @ xi + b, with xi the concatenation of every unit noise scalar drawn so far."""

    def __init__(self, A: np.ndarray, b: np.ndarray):
        self.A, self.b = A, b

    def __add__(self, o):
        k = max(self.A.shape[1], o.A.shape[1])
        return Affine(_pad(self.A, k) + _pad(o.A, k), self.b + o.b)

    def scale(self, c):
        return Affine(self.A * c[:, None] if np.ndim(c) else self.A * c, self.b * c)


def _pad(A, k):
    return np.pad(A, ((0, 0), (0, k - A.shape[1])))


class NoiseBank:
    def __init__(self):
        self.k = 0

    def draw(self, d):
        A = np.zeros((d, self.k + d))
        A[:, self.k :] = np.eye(d)
        self.k += d
        return Affine(A, np.zeros(d))


def ref_denoise(x: Affine, mu, var, sigma):
    c = var / (var + sigma**2)
    return Affine(x.A * c[:, None], mu + c * (x.b - mu))


def ref_step(x: Affine, x0: Affine, sigma, sigma_next, kind, bank: NoiseBank) -> Affine:
    """DDPM posterior written in VP form (independently of the sampler's VE ancestral form)."""
    if sigma_next == 0:
        return x0
    if kind == "euler":
        return x0.scale(1 - sigma_next / sigma) + x.scale(sigma_next / sigma)
    ab_t, ab_prev = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
    alpha_t = ab_t / ab_prev
    beta_t = 1 - alpha_t
    c0 = math.sqrt(ab_prev) * beta_t / (1 - ab_t)
    cx = math.sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t)
    std = math.sqrt((1 - ab_prev) / (1 - ab_t) * beta_t)
    x_vp = x.scale(math.sqrt(ab_t))
    out_vp = x0.scale(c0) + x_vp.scale(cx) + bank.draw(len(x.b)).scale(std)
    return out_vp.scale(1 / math.sqrt(ab_prev))


def reference(grids, starts, params, lam, kind, join="noise", priors=None, max_pull=0.5):
    """Mean and covariance of the final states of two participants 'A' and 'B' coupled with lam."""
    names = ["A", "B"]
    bank = NoiseBank()  # one index space for all noise, so cross terms line up
    state, last_x0 = {}, {}
    n_steps = len(grids["A"]) - 1
    for i in range(n_steps):
        for n in names:
            if starts[n] == i:
                s = grids[n][i]
                eps = bank.draw(D)
                other = "B" if n == "A" else "A"
                if join == "partner" and other in last_x0:
                    state[n] = last_x0[other] + eps.scale(s)
                else:
                    state[n] = eps.scale(priors[n](s))
        live = [n for n in names if n in state]
        x0 = {n: ref_denoise(state[n], *params[n], grids[n][i]) for n in live}
        nxt = {n: ref_step(state[n], x0[n], grids[n][i], grids[n][i + 1], kind, bank) for n in live}
        if len(live) == 2 and lam > 0:
            wa = min(grids["A"][i + 1] * lam, max_pull)
            wb = min(grids["B"][i + 1] * lam, max_pull)
            diff = x0["A"] + x0["B"].scale(-1.0)
            nxt["A"] = nxt["A"] + diff.scale(-wa)
            nxt["B"] = nxt["B"] + diff.scale(wb)
        state.update(nxt)
        last_x0 = x0
    A = np.concatenate([_pad(state["A"].A, bank.k), _pad(state["B"].A, bank.k)])
    return np.concatenate([state["A"].b, state["B"].b]), A @ A.T


def probe(build, run_kwargs, n_noise):
    """Read the implementation's affine map exactly: zeros -> mean, unit impulses -> columns.

    ``n_noise`` bounds the scalars one participant draws; impulses past its last draw give zero
    columns, which add nothing to the covariance.
    """

    def run(target=None, k=None):
        a, b = build()
        for p in (a, b):
            p.impulse = k if p.name == target else None
        out = sample_coupled([a, b], **run_kwargs).latents
        return torch.cat([out["A"].flatten(), out["B"].flatten()]).numpy()

    mean = run()
    cols = [run(name, k) - mean for name in ("A", "B") for k in range(n_noise)]
    J = np.stack(cols, axis=1)
    return mean, J @ J.T


GRID_A = schedules.karras_schedule(0.05, 20.0, 5)
GRID_B = schedules.discrete_schedule(schedules.sd_sigma_table(), 5, "leading", steps_offset=1)


@pytest.mark.parametrize("kind", ["ddpm", "euler"])
@pytest.mark.parametrize("lam", [0.0, 0.05, 0.4])
def test_step_alignment_matches_mean_covariance_recursion(kind, lam):
    def build():
        return make(ScriptedParticipant, "A", sigmas=GRID_A), make(ScriptedParticipant, "B", MU_B, VAR_B, sigmas=GRID_B)

    kwargs = {"couplings": [Coupling("A", "B", lam)], "step": kind, "alignment": "step"}
    mean, cov = probe(build, kwargs, n_noise=(len(GRID_A) + 1) * D)
    grids = {"A": GRID_A.tolist(), "B": GRID_B.tolist()}
    priors = {"A": lambda s: s, "B": lambda s: s}
    r_mean, r_cov = reference(
        grids, {"A": 0, "B": 0}, {"A": (MU_A.numpy(), VAR_A.numpy()), "B": (MU_B.numpy(), VAR_B.numpy())}, lam, kind, priors=priors
    )
    np.testing.assert_allclose(mean, r_mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, r_cov, rtol=1e-8, atol=1e-9)


SHARED = schedules.karras_schedule(0.05, 20.0, 6)


@pytest.mark.parametrize("kind", ["ddpm", "euler"])
@pytest.mark.parametrize("join", ["noise", "partner"])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_sigma_alignment_with_late_join_matches_recursion(kind, join, lam):
    # B was "trained" only up to sigma 5: it joins the shared grid at the first sigma <= 5
    def build():
        return make(ScriptedParticipant, "A"), make(ScriptedParticipant, "B", MU_B, VAR_B, sigma_max=5.0)

    kwargs = {"couplings": [Coupling("A", "B", lam)], "step": kind, "alignment": "sigma", "sigmas": SHARED, "join": join}
    mean, cov = probe(build, kwargs, n_noise=(len(SHARED) + 1) * D)
    grid = SHARED.tolist()
    start_b = next(i for i, s in enumerate(grid) if s <= 5.0)
    assert start_b > 0
    params = {"A": (MU_A.numpy(), VAR_A.numpy()), "B": (MU_B.numpy(), VAR_B.numpy())}
    priors = {"A": lambda s: s, "B": lambda s: s}
    r_mean, r_cov = reference({"A": grid, "B": grid}, {"A": 0, "B": start_b}, params, lam, kind, join=join, priors=priors)
    np.testing.assert_allclose(mean, r_mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, r_cov, rtol=1e-8, atol=1e-9)
    a, b = make(name="A"), make(name="B", mu=MU_B, var=VAR_B, sigma_max=5.0)
    res = sample_coupled([a, b], **kwargs)
    assert res.joined_at == {"A": 0, "B": start_b}
    assert res.join_source["B"] == ("partner:A" if join == "partner" else "noise")


@pytest.mark.parametrize("kind", ["ddpm", "euler"])
@pytest.mark.parametrize("alignment", ["step", "sigma"])
def test_lambda_zero_is_bitwise_the_independent_samplers(kind, alignment):
    def pair():
        a = make(name="A", sigmas=GRID_A, items=4, seed=[1, 2, 3, 4])
        b = make(name="B", mu=MU_B, var=VAR_B, sigmas=GRID_B, items=4, seed=7, sigma_max=5.0 if alignment == "sigma" else math.inf)
        return a, b

    extra = {"sigmas": SHARED} if alignment == "sigma" else {}
    a, b = pair()
    together = sample_coupled([a, b], [Coupling("A", "B", 0.0)], step=kind, alignment=alignment, **extra).latents
    a, b = pair()
    alone_a = sample_coupled([a], step=kind, alignment=alignment, **extra).latents["A"]
    alone_b = sample_coupled([b], step=kind, alignment=alignment, **extra).latents["B"]
    assert torch.equal(together["A"], alone_a)
    assert torch.equal(together["B"], alone_b)


def test_many_ancestral_steps_sample_the_target_distribution():
    # DDPM with a point estimate of x0 loses ~10/steps % of the variance; 1000 steps keep that
    # bias near 1%, the allowance below, on top of 5 standard errors of 50k samples
    n = 50_000
    sig = schedules.karras_schedule(0.002, 80.0, 1000)
    p = make(name="A", sigmas=sig, items=n, seed=3)
    x = sample_coupled([p], step="ddpm").latents["A"]
    mean, var = x.mean(0), x.var(0)
    se_mean = (VAR_A / n).sqrt()
    se_var = VAR_A * math.sqrt(2 / n)
    assert torch.all((mean - MU_A).abs() < 5 * se_mean + 0.01 * VAR_A.sqrt()), (mean, MU_A)
    assert torch.all((var - VAR_A).abs() < 5 * se_var + 0.015 * VAR_A), (var, VAR_A)


@pytest.mark.parametrize("kind", ["ddpm", "euler"])
def test_distance_shrinks_monotonically_with_lambda(kind):
    sig = schedules.karras_schedule(0.02, 14.6, 30)
    lams = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    dist = []
    for lam in lams:
        a = make(name="A", sigmas=sig, items=2000, seed=1)
        b = make(name="B", mu=MU_B, var=VAR_B, sigmas=sig, items=2000, seed=2)
        out = sample_coupled([a, b], [Coupling("A", "B", lam)], step=kind).latents
        dist.append(float((out["A"] - out["B"]).norm(dim=1).mean()))
    assert all(d1 < d0 for d0, d1 in zip(dist, dist[1:], strict=False)), dist
    assert dist[-1] < 0.05 * dist[0], dist


def test_coupling_items_of_one_participant_and_chains():
    # three prompts batched in one participant, coupled as a chain 0-1-2
    sig = schedules.karras_schedule(0.02, 14.6, 20)
    mu = torch.stack([MU_A, MU_B, -MU_A])
    var = torch.stack([VAR_A, VAR_B, VAR_A])
    p = Participant("P", gaussian_denoiser(mu, var), (3, D), sigmas=sig, seeds=[0, 1, 2], dtype=torch.float64)
    free = sample_coupled([p], step="euler").latents["P"]
    chain = [Coupling("P", "P", 5.0, items_a=[0], items_b=[1]), Coupling("P", "P", 5.0, items_a=[1], items_b=[2])]
    tied = sample_coupled([p], chain, step="euler").latents["P"]
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        assert (tied[i] - tied[j]).norm() < 0.2 * (free[i] - free[j]).norm()
    with pytest.raises(ValueError, match="only be coupled to other items"):
        sample_coupled([p], [Coupling("P", "P", 1.0, items_a=[0], items_b=[0])])


def test_resampling_operator_couples_latents_of_different_sizes():
    sig = schedules.karras_schedule(0.02, 14.6, 20)
    big = Participant("big", gaussian_denoiser(torch.tensor(1.0), torch.tensor(0.5)), (1, 4, 16, 16), sigmas=sig, seeds=0)
    small = Participant("small", gaussian_denoiser(torch.tensor(-1.0), torch.tensor(0.5)), (1, 4, 8, 8), sigmas=sig, seeds=1)
    with pytest.raises(ValueError, match="resampling"):
        sample_coupled([big, small], [Coupling("big", "small", 1.0)])
    c = Coupling("big", "small", 1.0, b_to_a=resize_latents((16, 16), "nearest"), a_to_b=resize_latents((8, 8), "area"))
    out = sample_coupled([big, small], [c], step="euler").latents
    free = sample_coupled([big, small], step="euler").latents
    gap = lambda o: float((resize_latents((8, 8))(o["big"]) - o["small"]).abs().mean())  # noqa: E731
    assert gap(out) < 0.2 * gap(free)


def test_progress_and_cancel():
    sig = schedules.karras_schedule(0.02, 14.6, 8)
    seen = []
    sample_coupled([make(sigmas=sig)], callback=lambda info: seen.append((info.step, info.total, info.sigmas["A"])))
    assert [s[0] for s in seen] == list(range(1, 9)) and all(s[1] == 8 for s in seen)
    assert seen[0][2] == pytest.approx(14.6)
    calls = []

    def cancel_after_three():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="before step 4 of 8"):
        sample_coupled([make(sigmas=sig)], should_cancel=cancel_after_three)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"couplings": [Coupling("A", "C", 1.0)]}, "unknown participant 'C'"),
        ({"couplings": [Coupling("A", "B", -1.0)]}, "lam must be a finite number >= 0"),
        ({"step": "heun"}, "step must be one of"),
        ({"alignment": "time"}, "alignment must be one of"),
        ({"alignment": "sigma"}, "needs the shared schedule"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    a, b = make(name="A", sigmas=GRID_A), make(name="B", sigmas=GRID_B)
    with pytest.raises(ValueError, match=message):
        sample_coupled([a, b], **kwargs)


def test_step_alignment_shorter_schedule_joins_late_and_ends_together():
    short = schedules.karras_schedule(0.1, 10, 3)
    a, b = make(name="A", sigmas=GRID_A), make(name="B", sigmas=short)
    seen = []
    res = sample_coupled([a, b], [Coupling("A", "B", 0.5)], callback=lambda info: seen.append(dict(info.sigmas)))
    n = len(GRID_A) - 1
    assert res.joined_at == {"A": 0, "B": n - 3}
    assert [s.get("B") for s in seen] == [None] * (n - 3) + [float(x) for x in short[:-1]]
    solo = sample_coupled([make(name="B", sigmas=short)]).latents["B"]  # uncoupled until it joins: same start noise
    assert res.latents["B"].shape == solo.shape and not torch.equal(res.latents["B"], solo)


def test_init_latent_starts_img2img_at_the_first_sigma():
    short = schedules.karras_schedule(0.1, 2.0, 4)
    init = torch.full((1, D), 0.7, dtype=torch.float64)
    ref = make(name="A", sigmas=short)
    x_first = init + float(short[0]) * ref.randn(ref.generators())
    rec = []
    q = make(name="A", sigmas=short)
    q.init, q.denoiser = init, _Recording(q.denoiser, rec)
    res = sample_coupled([q])
    assert torch.equal(rec[0], x_first) and res.join_source == {"A": "init"}
    q = make(name="A", sigmas=schedules.flow_schedule(3))  # starts at sigma = inf: nothing to noise an init latent to
    q.init = init
    with pytest.raises(ValueError, match="finite first sigma"):
        sample_coupled([q])


class _Recording:
    def __init__(self, inner, log):
        self.inner, self.log, self.sigma_max = inner, log, inner.sigma_max

    def prior_scale(self, sigma):
        return self.inner.prior_scale(sigma)

    def __call__(self, x, sigma):
        self.log.append(x.clone())
        return self.inner(x, sigma)


# --- the adapters against diffusers' own schedulers ---------------------------------------------


def _velocity_model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def v(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return conv(x) * (1 + s.view(-1, 1, 1, 1)) + 0.3 * x

    return v


def test_flow_adapter_matches_flow_match_euler_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = _velocity_model()
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(8)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((2, 4, 6, 6), generator=gen)
    ref_x0 = []
    for t in sched.timesteps:
        s = float(sched.sigmas[sched.index_for_timestep(t)])
        v = model(x, (t / 1000).expand(2))
        ref_x0.append(x - s * v)
        x = sched.step(v, t, x).prev_sample
    seen = []
    p = Participant("flow", FlowDenoiser(model), (2, 4, 6, 6), sigmas=schedules.flow_sigmas_to_ve(sched.sigmas), seeds=5)
    out = sample_coupled([p], step="euler", callback=lambda i: seen.append(i.x0["flow"])).latents["flow"]
    for mine, ref in zip(seen, ref_x0, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def _tiny_unet_model(prediction: str):
    from backend.models import tiny

    unet = tiny.sd_unet(seed=1)
    cond = torch.randn((2, 3, 32), generator=torch.Generator().manual_seed(9))

    def model(x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unet(x_vp, t, encoder_hidden_states=cond).sample

    return model


def test_eps_adapter_ddpm_step_matches_diffusers_ddpm_scheduler():
    from diffusers import DDPMScheduler

    model = _tiny_unet_model("epsilon")
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    sched.set_timesteps(10)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((2, 4, 16, 16), generator=gen) * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(model(x, t.expand(2)), t, x, generator=gen).prev_sample
    table = schedules.sigmas_from_alphas_cumprod(sched.alphas_cumprod)
    den = DiscreteDenoiser(model, table, "epsilon")
    p = Participant("sd", den, (2, 4, 16, 16), sigmas=schedules.discrete_schedule(table, 10, "leading"), seeds=3)
    out = sample_coupled([p], step="ddpm").latents["sd"]
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_discrete_adapter_euler_step_matches_diffusers_ddim(prediction):
    from diffusers import DDIMScheduler

    model = _tiny_unet_model(prediction)
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=prediction,
    )
    sched.set_timesteps(12)
    x = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(4))
    states = []
    for t in sched.timesteps:
        x = sched.step(model(x, t.expand(2)), t, x, eta=0.0).prev_sample
        states.append(x)
    table = schedules.sigmas_from_alphas_cumprod(sched.alphas_cumprod)
    sig = schedules.discrete_schedule(table, 12, "leading")
    p = Participant("sd", DiscreteDenoiser(model, table, prediction), (2, 4, 16, 16), sigmas=sig, seeds=4)
    out = sample_coupled([p], step="euler").latents["sd"]
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)


# --- SEVA's discretisation against the reference fixtures ---------------------------------------

SEVA_FIXTURES = fixture_dir("seva")


@pytest.mark.parametrize("n", [1, 4, 5, 25, 50, 1000])
def test_seva_schedule_matches_reference_bit_for_bit(n):
    import json

    from safetensors.torch import load_file

    ref = load_file(SEVA_FIXTURES / "schedules.safetensors")
    table = schedules.seva_sigma_table()
    assert torch.equal(table.to(torch.float32), ref["denoiser_sigmas"])
    ts = json.loads((SEVA_FIXTURES / "schedules.json").read_text())["timesteps_ascending"][f"n{n}"]
    assert schedules.discrete_timesteps(1000, n, "seva").flip(0).tolist() == ts
    assert torch.equal(schedules.discrete_schedule(table, n, "seva").to(torch.float32), ref[f"ddpm_sigmas_n{n}"])


# --- issue 14: shared-band pulls, the per-item cap, and Algorithm 1 re-derived in VP form ----------


def test_latents_of_different_sizes_are_pulled_only_in_the_band_both_hold():
    """The 16² side keeps detail the 8² side cannot represent (a checkerboard, invisible after area
    down-sampling); the pull still closes the gap in the shared band."""
    sig = schedules.karras_schedule(0.02, 14.6, 20)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1.0
    big = Participant("big", gaussian_denoiser(checker.expand(1, 4, 16, 16), torch.tensor(0.05)), (1, 4, 16, 16), sigmas=sig, seeds=0)
    small = Participant("small", gaussian_denoiser(torch.tensor(-1.0), torch.tensor(0.5)), (1, 4, 8, 8), sigmas=sig, seeds=1)
    down, up = resize_latents((8, 8), "area"), resize_latents((16, 16), "bilinear")
    c = Coupling("big", "small", 0.05, b_to_a=up, a_to_b=down)
    out = sample_coupled([big, small], [c], step="euler").latents
    free = sample_coupled([big, small], step="euler").latents
    detail = lambda x: float((x - up(down(x))).pow(2).mean())  # noqa: E731 - what the small side cannot hold
    assert detail(out["big"]) > 0.97 * detail(free["big"]), (detail(out["big"]), detail(free["big"]))
    gap = lambda o: float((down(o["big"]) - o["small"]).abs().mean())  # noqa: E731
    assert gap(out) < 0.7 * gap(free), (gap(out), gap(free))


def test_max_pull_caps_each_items_total_over_all_its_couplings():
    """Four prompts coupled in all pairs: per pair the weight is capped, but an item pulled by three
    partners at 0.5 each moved 2x its gap and swapped sides. The cap is now on the item's total."""
    c_val = torch.tensor([-3.0, -1.0, 1.0, 3.0]).view(4, 1)
    den = EDMDenoiser(lambda x, sigma: c_val.expand_as(x).clone())
    p = ScriptedParticipant("P", den, (4, 1), sigmas=torch.tensor([10.0, 0.01], dtype=torch.float64))
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    couplings = [Coupling("P", "P", 100.0, items_a=[i], items_b=[j]) for i, j in pairs]
    out = sample_coupled([p], couplings, step="euler", max_pull=0.5).latents["P"]
    start = c_val * (1 - 0.01 / 10)  # the Euler step from x = 0 (scripted zero noise)
    expected = start - (0.5 / 3) * (4 * c_val - c_val.sum())  # total weight 3 x 1.0 per item, capped at 0.5
    torch.testing.assert_close(out, expected)
    assert (torch.sign(out) == torch.sign(c_val)).all()  # nobody swapped sides


def _vp_coupled_reference(sched_cls, models, seeds, lam, steps, shape, eta):
    """Algorithm 1 as the paper writes it, in VP form, stepped by a diffusers scheduler: an ordinary step of
    each participant, then x_A <- x_A - sqrt(1 - abar_prev) * lam * (x0_A - x0_B). Written from the paper, not
    from backend.sampling."""
    kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    sched = sched_cls(**kw, set_alpha_to_one=True) if eta == 0.0 else sched_cls(**kw)
    sched.set_timesteps(steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    xs = [torch.randn(shape, generator=g) * sched.init_noise_sigma for g in gens]
    abar = sched.alphas_cumprod
    for t in sched.timesteps:
        eps = [m(x, t.expand(shape[0])) for m, x in zip(models, xs, strict=True)]
        x0 = [(x - (1 - abar[t]).sqrt() * e) / abar[t].sqrt() for x, e in zip(xs, eps, strict=True)]
        step_kw = {"eta": 0.0} if eta == 0.0 else {}
        nxt = [sched.step(e, t, x, generator=g, **step_kw).prev_sample for e, x, g in zip(eps, xs, gens, strict=True)]
        prev = t - sched.config.num_train_timesteps // steps
        abar_prev = abar[prev] if prev >= 0 else torch.tensor(1.0)
        f = (1 - abar_prev).sqrt() * lam
        xs = [nxt[0] - f * (x0[0] - x0[1]), nxt[1] - f * (x0[1] - x0[0])]
    return xs


@pytest.mark.parametrize("step, eta", [("ddpm", 1.0), ("euler", 0.0)])
def test_coupled_step_equals_the_papers_vp_form_with_diffusers_schedulers(step, eta):
    from diffusers import DDIMScheduler, DDPMScheduler

    model_a = _tiny_unet_model("epsilon")

    def model_b(x, t):  # a second, different eps-model
        return 0.7 * model_a(x.flip(-1), t).flip(-1) + 0.1 * x

    shape, lam, steps = (2, 4, 16, 16), 0.05, 10
    ref = _vp_coupled_reference(DDPMScheduler if step == "ddpm" else DDIMScheduler, [model_a, model_b], [3, 5], lam, steps, shape, eta)
    indep = _vp_coupled_reference(DDPMScheduler if step == "ddpm" else DDIMScheduler, [model_a, model_b], [3, 5], 0.0, steps, shape, eta)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    table = schedules.sigmas_from_alphas_cumprod(sched.alphas_cumprod)
    sig = schedules.discrete_schedule(table, steps, "leading")
    ps = [Participant(n, DiscreteDenoiser(m, table, "epsilon"), shape, sigmas=sig, seeds=s)
          for n, m, s in (("a", model_a, 3), ("b", model_b, 5))]  # fmt: skip
    out = sample_coupled(ps, [Coupling("a", "b", lam)], step=step, max_pull=None).latents
    torch.testing.assert_close(out["a"], ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["b"], ref[1], rtol=1e-4, atol=1e-4)
    assert (ref[0] - indep[0]).abs().max() > 1e-2  # the coupling really acts at this lam


def test_overlapping_the_participants_on_cuda_streams_changes_nothing():
    """``overlap=True`` predicts the second participant on a side stream on CUDA (the same path as
    without it elsewhere): results must be bit-identical. On this CPU it checks the flag's plumbing;
    the stream path itself runs wherever CUDA is present."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"

    sig = schedules.karras_schedule(0.02, 80.0, 12)

    def pair():
        return [
            Participant(n, gaussian_denoiser(mu.to(dev), var.to(dev)), (4, D), sigmas=sig, seeds=k, dtype=torch.float64, device=dev)
            for k, (n, mu, var) in enumerate((("A", MU_A, VAR_A), ("B", MU_B, VAR_B)))
        ]

    runs = [sample_coupled(pair(), [Coupling("A", "B", 0.3)], overlap=o) for o in (False, True)]
    for name in ("A", "B"):
        assert torch.equal(runs[0].latents[name], runs[1].latents[name])
