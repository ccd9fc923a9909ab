"""IC-Light on a tiny SD1.5-layout model: conv_in widening, offset merge, conditions, and parity with
the official recipe (stock diffusers pipeline + the concat-conds forward hook from the editor notes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.models import tiny
from backend.models.editors.ic_light import CHANNELS, composite_on_grey, load_ic_light, merge_offsets, widen_conv_in
from backend.models.weights import ModelUnavailable
from backend.sampling import sample_coupled


def test_widen_keeps_the_base_and_zeroes_new_inputs():
    unet = tiny.sd_unet(seed=3)
    old_w, old_b = unet.conv_in.weight.detach().clone(), unet.conv_in.bias.detach().clone()
    widen_conv_in(unet, 12)
    w = unet.conv_in.weight
    assert w.shape[1] == 12 and torch.equal(w[:, :4], old_w) and not w[:, 4:].any() and torch.equal(unet.conv_in.bias, old_b)
    assert unet.config.in_channels == 4  # stock pipelines size their noise from this


def test_offsets_are_added_key_by_key_and_mismatches_are_named():
    unet = tiny.sd_unet(seed=3)
    widen_conv_in(unet, 8)
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    off = tiny.offsets_like(base, seed=1)
    merge_offsets(unet, off)
    for k in ("conv_in.weight", "down_blocks.1.attentions.0.proj_in.weight", "conv_out.bias"):
        torch.testing.assert_close(unet.state_dict()[k], base[k] + off[k])
    bad = dict(off)
    bad.pop("conv_out.bias")
    bad["conv_in.weight"] = torch.zeros(4, 12, 3, 3)
    with pytest.raises(ModelUnavailable, match=r"1 missing, 0 unexpected, 1 mis-shaped.*conv_out.bias"):
        merge_offsets(unet, bad)


def test_foreground_on_grey_and_condition_layout():
    rgb = np.full((8, 8, 3), 200.0)
    alpha = np.zeros((8, 8))
    alpha[2:6, 2:6] = 1.0
    comp = composite_on_grey(rgb, alpha)
    assert (comp[alpha == 0] == 127).all() and (comp[alpha == 1] == 200).all()
    fc = load_ic_light("fc", base="tiny")
    fbc = load_ic_light("fbc", base="tiny")
    fg = [np.random.default_rng(i).integers(0, 256, (64, 64, 3)).astype(np.float64) for i in range(2)]
    al = [np.ones((64, 64)), np.zeros((64, 64))]
    c = fc.condition_latents(fg, al)
    assert c.shape == (2, 4, 8, 8)
    # an all-grey image is x = 0 for the VAE: its condition is the VAE's response to zeros
    with torch.no_grad():
        zero = fc.pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode() * fc.pipe.vae.config.scaling_factor
    torch.testing.assert_close(c[1:], zero, rtol=1e-4, atol=1e-4)
    bg = [np.zeros((64, 64, 3)) + 30, np.zeros((64, 64, 3)) + 220]
    cb = fbc.condition_latents(fg, al, bg)
    assert cb.shape == (2, 8, 8, 8)
    vae = fbc.pipe.vae
    with torch.no_grad():

        def enc(imgs):
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.0 - 1.0
            return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

        fg_on_grey = [composite_on_grey(f, a) for f, a in zip(fg, al, strict=True)]
        torch.testing.assert_close(cb[:, :4], enc(fg_on_grey), rtol=1e-4, atol=1e-4)  # [fg | bg] on channels
        torch.testing.assert_close(cb[:, 4:], enc(bg), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="fbc needs one background"):
        fbc.condition_latents(fg, al)
    assert fc.pipe.unet.conv_in.in_channels == CHANNELS["fc"] and fbc.pipe.unet.conv_in.in_channels == CHANNELS["fbc"]


def test_per_view_relight_matches_the_official_hooked_pipeline():
    """Our loop (IC-Light as a participant, DDIM = Euler) against diffusers' StableDiffusionPipeline
    with the official recipe: in_channels stays 4 and a forward patch concatenates `concat_conds`."""
    from diffusers import DDIMScheduler

    ic = load_ic_light("fc", base="tiny")
    pipe = ic.pipe
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=True)
    fg = [np.random.default_rng(5).integers(0, 256, (64, 64, 3)).astype(np.float64)]
    conds = ic.condition_latents(fg, [np.ones((64, 64))])
    prompt, negative = "sunset over the sea", "lowres"
    p = ic.participant("ic", conds, prompt, steps=6, cfg=2.0, seeds=[11], negative=negative)
    ours = sample_coupled([p], step="euler").latents["ic"]

    unet = pipe.unet
    original = unet.forward

    def hooked(sample, timestep, encoder_hidden_states, **kwargs):  # the editor notes' monkey-patch
        c = kwargs.pop("cross_attention_kwargs")["concat_conds"].to(sample)
        c = torch.cat([c] * (sample.shape[0] // c.shape[0]), dim=0)
        return original(torch.cat([sample, c], dim=1), timestep, encoder_hidden_states, **kwargs)

    unet.forward = hooked
    try:
        ref = pipe(
            prompt=prompt,
            negative_prompt=negative,
            num_inference_steps=6,
            guidance_scale=2.0,
            height=64,
            width=64,
            generator=[torch.Generator().manual_seed(11)],
            output_type="latent",
            cross_attention_kwargs={"concat_conds": conds},
        ).images
    finally:
        unet.forward = original
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
