"""Magic Fixup against the reference fixtures (../shared/fixtures/magicfixup, README there): weights
through our key mapping, both UNets block by block, the detail features, eps, DDIM steps for both
schedule variants, the VAE and the preprocessing. ``MAGICFIXUP_FIXTURES`` overrides the folder."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from shared_fixtures import fixture_dir

from backend.models.editors import magic_fixup as mf
from backend.sampling import ve_step
from backend.sampling.denoisers import vp_scale

FIX = fixture_dir("magicfixup")
UNUSED = ("proj_out.", "learnable_vector", "cond_stage_model.", "betas", "alphas_cumprod_prev", "log_one_minus", "sqrt_recip",
          "posterior_")  # fmt: skip


def close(a, b, atol, rtol=0.0):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    excess = ((a - b).abs() - (atol + rtol * b.abs())).max()
    assert excess <= 0, f"max abs diff {float((a - b).abs().max()):.3g} (excess {float(excess):.3g})"


@pytest.fixture(scope="module")
def cfg():
    manifest = json.loads((FIX / "manifest.json").read_text())
    for name, meta in manifest.items():
        assert hashlib.sha256((FIX / name).read_bytes()).hexdigest() == meta["sha256"], f"{name} changed"
    assert len(manifest) >= 8
    return json.loads((FIX / "config.json").read_text())


@pytest.fixture(scope="module")
def weights():
    return load_file(FIX / "weights.safetensors")


@pytest.fixture(scope="module")
def model(cfg, weights):
    return mf.from_state_dict(weights, cfg["unet"], cfg["vae"]["ddconfig"], cfg["vae"]["embed_dim"])


def test_weights_load_bit_for_bit_and_every_used_key_is_consumed(cfg, weights, model):
    used = {k for k in weights if k.startswith(("model.", "first_stage_model.")) or k in mf.SCHEDULE_KEYS}
    consumed = set()
    for prefix, role, net in (("model.diffusion_model.", "synth", model.synth), ("model.reference_model.", "detail", model.detail)):
        part = mf.convert_unet(weights, prefix, cfg["unet"], role)
        sd = net.state_dict()
        assert set(part) == set(sd), sorted(set(part) ^ set(sd))[:5]
        assert all(torch.equal(sd[k], v) for k, v in part.items())
        consumed |= {k for k in weights if k.startswith(prefix)}
    vae = mf.convert_vae(weights)
    assert set(vae) == set(model.vae.state_dict()) and all(torch.equal(model.vae.state_dict()[k], v) for k, v in vae.items())
    leftover = [k for k in weights if not k.startswith(("model.", "first_stage_model.")) and not k.startswith(UNUSED)]
    assert sorted(leftover) == sorted(mf.SCHEDULE_KEYS)
    assert used - consumed - set(mf.SCHEDULE_KEYS) <= {k for k in weights if k.startswith("first_stage_model.")}
    assert model.schedule_kind == "zero-terminal-snr"  # the tiny file carries the buffers the reference code builds


def _ldm_outputs(net, ldm: dict) -> dict[str, str]:
    """LDM module name -> the diffusers module whose output equals it."""
    out = {"input_blocks.0": "conv_in", "middle_block": "mid_block", "out": "conv_out"}
    n, R, attn = len(ldm["channel_mult"]), ldm["num_res_blocks"], mf.attention_levels(ldm)
    for k in range(n):
        for j in range(R):
            out[f"input_blocks.{1 + k * (R + 1) + j}"] = f"down_blocks.{k}.{'attentions' if k in attn else 'resnets'}.{j}"
        if k < n - 1:
            out[f"input_blocks.{1 + k * (R + 1) + R}"] = f"down_blocks.{k}.downsamplers.0"
    for u in range(n):
        for i in range(R + 1):
            last = f"up_blocks.{u}.upsamplers.0" if (i == R and u < n - 1) else None
            out[f"output_blocks.{u * (R + 1) + i}"] = last or f"up_blocks.{u}.{'attentions' if (n - 1 - u) in attn else 'resnets'}.{i}"
    return out


def _hook(net, paths: dict[str, str], store: dict, tag: str):
    handles = []
    for ldm_name, path in paths.items():
        mod = net.get_submodule(path)

        def grab(_m, _i, o, key=f"{tag}/{ldm_name}"):
            store[key] = (o[0] if isinstance(o, tuple) else getattr(o, "sample", o)).detach().clone()

        handles.append(mod.register_forward_hook(grab))
    return handles


def test_denoiser_case_a_block_by_block(cfg, model):
    d = load_file(FIX / "denoiser_case_a.safetensors")
    x, t, z_ref, noise = d["in/x"], d["in/t"], d["in/z_ref"], d["in/ref_noise"]
    close(model.detail_input(z_ref, t, x[:, 8:9], noise), d["detail/input"], 2e-6)
    got: dict[str, torch.Tensor] = {}
    handles = []
    for tag, net in (("synth", model.synth), ("detail", model.detail)):
        handles += _hook(net, _ldm_outputs(net, cfg["unet"]) | {"emb": "time_embedding"}, got, tag)
    tf = {"input_blocks.4.1": "down_blocks.1.attentions.0", "middle_block.1": "mid_block.attentions.0"}
    for ldm_name, path in tf.items():
        parts = {"groupnorm": "norm", "proj_in": "proj_in", "norm1": "transformer_blocks.0.norm1", "attn1": "transformer_blocks.0.attn1",
                 "norm2": "transformer_blocks.0.norm2", "attn3": "transformer_blocks.0.attn2", "norm3": "transformer_blocks.0.norm3",
                 "ff": "transformer_blocks.0.ff", "block_out": "transformer_blocks.0", "proj_out": "proj_out", "out": ""}  # fmt: skip
        handles += _hook(model.synth, {f"{ldm_name}/{k}": f"{path}.{v}".rstrip(".") for k, v in parts.items()}, got, "synth/tf")
    bank_copy: dict = {}
    original = model.synth.forward

    def keep_bank(*a, **kw):
        bank_copy.update(model.bank)
        return original(*a, **kw)

    model.synth.forward = keep_bank
    try:
        eps = model.eps(x, t, z_ref, noise)
    finally:
        model.synth.forward = original
        for h in handles:
            h.remove()
    close(eps, d["out/eps"], 2e-5, 1e-5)
    checked = 0
    for key, want in d.items():
        if key.startswith(("synth/", "detail/")) and key in got:
            tol = (2e-5, 1e-5) if key.endswith(("/emb", "/out")) and "/tf/" not in key else (1e-4, 1e-5)
            close(got[key], want, *tol)
            checked += 1
    expected = [k for k in d if k.startswith(("synth/", "detail/")) and not k.startswith("detail/ctx/") and k != "detail/input"]
    assert checked == len(expected), sorted(set(expected) - set(got))[:5]
    modules = mf._module_map(cfg["unet"])  # LDM transformer (e.g. input_blocks.4.1) -> diffusers attentions
    ctx = [k for k in d if k.startswith("detail/ctx/")]
    assert len(ctx) == 11 and len(bank_copy) == 11
    for key in ctx:
        close(bank_copy[modules[key.removeprefix("detail/ctx/")]], d[key], 1e-4, 1e-5)


def test_denoiser_case_b_per_sample_timesteps(model):
    d = load_file(FIX / "denoiser_case_b.safetensors")
    close(model.detail_input(d["in/z_ref"], d["in/t"], d["in/x"][:, 8:9], d["in/ref_noise"]), d["detail/input"], 2e-6)
    close(model.eps(d["in/x"], d["in/t"], d["in/z_ref"], d["in/ref_noise"]), d["out/eps"], 2e-5, 1e-5)


@pytest.mark.parametrize("variant", ["zsnr", "sd"])
def test_ddim_steps_both_schedules(cfg, weights, variant):
    d = load_file(FIX / f"ddim_{variant}.safetensors")
    sd = dict(weights)
    for k in ("alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
        sd[k] = d[f"schedule/{k}"]
    m = mf.from_state_dict(sd, cfg["unet"], cfg["vae"]["ddconfig"], cfg["vae"]["embed_dim"])
    assert m.schedule_kind == {"zsnr": "zero-terminal-snr", "sd": "sd"}[variant]
    ac = m.alphas_cumprod.double()
    sig = m.schedule(50)
    ts = torch.tensor([int(torch.argmin((m.sigma_table() - s).abs())) for s in sig[:-1]])
    assert ts.flip(0).tolist() == d["schedule/ddim_timesteps"].tolist()
    vp = [vp_scale(float(s)) for s in sig]  # sqrt(abar) of each sigma
    close(torch.tensor(vp[:-1]).flip(0) ** 2, d["schedule/ddim_alphas"], 0, 1e-6)
    close(torch.tensor(vp[1:]).flip(0) ** 2, d["schedule/ddim_alphas_prev"], 0, 1e-6)
    s2 = torch.tensor([float(sig[i + 1]) ** 2 * (float(sig[i]) ** 2 - float(sig[i + 1]) ** 2) / float(sig[i]) ** 2 for i in range(50)])
    close((s2 * torch.tensor(vp[1:]) ** 2).sqrt().flip(0), d["schedule/ddim_sigmas"], 0, 2e-5)  # the DDPM posterior std
    z_in, z_ref, mask = d["in/z_inpaint"], d["in/z_ref"], d["in/mask"]
    # the start: the edit latent noised to t = 981
    init_x = (z_in + float(sig[0]) * d["init_noise"]) * vp[0]
    close(init_x, d["init_x"], 5e-5, 1e-5)
    # three steps chained through our sampler with the recorded noises, then the two tail steps
    ddim_noise = [d[f"step{i}/ddim_noise"] for i in range(3)]
    ref_noise = [d[f"step{i}/ref_noise"] for i in range(3)]
    draws = iter([d["init_noise"], *ddim_noise])
    from backend.sampling import sample_coupled

    part = m.fixup_participant("mf", z_in, z_ref, mask, steps=50)
    part.sigmas = sig[:4]
    part.noise_transform = lambda raw: next(draws).to(raw)
    refs = iter(ref_noise)
    part.denoiser = m.denoiser(z_in, z_ref, mask, lambda z: next(refs))
    x = sample_coupled([part], step="ddpm").latents["mf"] * vp[3]
    close(x, d["step2/x_prev"], 5e-5, 1e-5)
    for i in range(3):
        t = d[f"step{i}/t"]
        close(m.eps(d[f"step{i}/x9"], t, z_ref, d[f"step{i}/ref_noise"]), d[f"step{i}/eps"], 2e-5, 1e-5)
    for j, idx in ((0, 48), (1, 49)):  # tail: t = 21 then 1
        x_t = d[f"tail{j}/x_t"]
        x9 = torch.cat([x_t, z_in, mask], dim=1)
        eps = m.eps(x9, d[f"tail{j}/t"], z_ref, d[f"tail{j}/ref_noise"])
        s, s_next = float(sig[idx]), float(sig[idx + 1])
        x_ve = x_t / vp[idx]
        x0 = x_ve - s * eps
        close(x0 * vp[idx], d[f"tail{j}/pred_x0"] * float(ac[d[f"tail{j}/t"]]) ** 0.5, 5e-5, 1e-5)
        x_prev = ve_step(x_ve, x0, s, s_next, 1.0, d[f"tail{j}/ddim_noise"]) * vp[idx + 1]
        close(x_prev, d[f"tail{j}/x_prev"], 5e-5, 1e-5)


def test_vae_encode_sample_and_decode(model):
    d = load_file(FIX / "vae.safetensors")
    with torch.no_grad():
        dist = model.vae.encode(d["in/image"]).latent_dist
    close(dist.mean, d["posterior/mean"], 2e-5, 1e-5)
    close(dist.std, d["posterior/std"], 2e-5, 1e-5)
    z = model.encode(d["in/image"], noise=d["posterior/noise"])
    close(z, d["z_scaled"], 2e-5, 1e-5)
    with torch.no_grad():
        out = model.vae.decode(d["z_scaled"] / mf.SCALE).sample
    close(out, d["dec/out"], 2e-5, 1e-5)


def test_preprocessing_functions():
    from safetensors.numpy import load_file as load_np

    d = load_np(FIX / "preprocess.safetensors")
    edit = mf.resize_rgba(d["src/edit_rgba"], 64)
    np.testing.assert_array_equal(edit, d["edit_rgba"])
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.fromarray(d["src/ref_rgb"]).resize((64, 64))), d["ref_rgb"])
    np.testing.assert_array_equal(mf.roundtrip_lut_f16(), d["lut/u8_roundtrip_f16"])
    rgb = mf.roundtrip_lut_f16()[edit[..., :3]]
    np.testing.assert_array_equal(rgb, d["rgb_u8_for_inpaint"])
    alpha = edit[..., 3].astype(np.float32) / 255.0
    close(torch.from_numpy(alpha)[None, None], d["alpha"], 1e-6)
    holes, dilated = mf.hole_masks(alpha)
    np.testing.assert_array_equal(holes, d["hole_mask"])
    np.testing.assert_array_equal(dilated, d["hole_mask_dilated"])
    filled = mf.fill_holes(rgb, dilated)
    np.testing.assert_array_equal(filled, d["inpainted_u8"])
    close(mf.mask_latent(torch.from_numpy(d["alpha"]), 8), d["mask_latent"], 1e-6)
    inputs = mf.prepare(d["src/edit_rgba"], d["src/ref_rgb"], 64)
    close(inputs.inpaint_image, d["inpaint_image"], 1e-6)
    close(inputs.ref_image, d["ref_image"], 1e-6)


def test_loader_converts_the_release_pickle_once_and_refuses_objects(cfg, weights, model, tmp_path, monkeypatch):
    import argparse

    import huggingface_hub.constants as c

    from backend.models.weights import ModelUnavailable

    monkeypatch.setattr(c, "HF_HOME", str(tmp_path / "hf"))
    ckpt = tmp_path / "magicfu_weights.ckpt"
    torch.save(dict(weights) | {"cond_stage_model.dino_model.cls_token": torch.zeros(1, 1, 8)}, ckpt)  # the release: a flat torch.save
    logs = []
    m = mf.load_magic_fixup(str(ckpt), device="cpu", dtype="float32", unet=cfg["unet"], vae=cfg["vae"]["ddconfig"], log=logs.append)
    assert any("converting magicfu_weights.ckpt" in line for line in logs) and any("zero-terminal-snr" in line for line in logs)
    (converted,) = (tmp_path / "hf/coupled_edit/magic_fixup").rglob("model.safetensors")
    kept = load_file(converted)
    assert not any(k.startswith(mf.DROP) for k in kept) and "alphas_cumprod" in kept
    d = load_file(FIX / "denoiser_case_b.safetensors")
    args = (d["in/x"], d["in/t"], d["in/z_ref"], d["in/ref_noise"])
    assert torch.equal(m.eps(*args), model.eps(*args))
    logs.clear()
    mf.load_magic_fixup(str(ckpt), device="cpu", dtype="float32", unet=cfg["unet"], vae=cfg["vae"]["ddconfig"], log=logs.append)
    assert not any("converting" in line for line in logs)  # converted once
    torch.save({"model.x": torch.zeros(1), "opt": argparse.Namespace(lr=1)}, tmp_path / "evil.ckpt")
    with pytest.raises(ModelUnavailable, match="refusing to load evil.ckpt"):
        mf.load_magic_fixup(str(tmp_path / "evil.ckpt"), device="cpu", log=logs.append)
