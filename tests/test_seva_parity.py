"""SEVA against the reference implementation's fixtures (random weights, CPU float32).

The fixture folder comes from ``SEVA_FIXTURES`` (default ``../shared/fixtures/seva``, the
shared folder beside the checkout, as in CI's fresh clone). Tolerances are the fixture README's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from shared_fixtures import fixture_dir, research_file

from backend.models.seva import SevaConfig, SevaNet, chunking, preprocess
from backend.models.seva import cameras as C
from backend.models.seva.loader import SevaWeightsError, load_seva
from backend.models.seva.network import MultiviewTransformer, timestep_embedding
from backend.models.seva.sampling import SIGMA_TABLE, SevaDenoiser, build_conditioning, guidance_scales, sample_euler_edm, seva_schedule

ROOT = Path(__file__).resolve().parent.parent


FIX = fixture_dir("seva")


def js(name: str):
    return json.loads((FIX / name).read_text())


def st(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIX / name)


def close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.double() - b.double()).abs() - (atol + rtol * b.double().abs())
    assert float(err.max()) <= 0, f"max excess {float(err.max()):.3g}, max abs diff {float((a - b).abs().max()):.3g}"


def test_fixture_files_are_intact():
    manifest = js("manifest.json")
    for name, info in manifest.items():
        data = (FIX / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name


@pytest.fixture(scope="module")
def main_config() -> SevaConfig:
    return SevaConfig(**js("config_main.json")["seva_params"])


@pytest.fixture(scope="module")
def net(tmp_path_factory, main_config) -> SevaNet:
    # the fixture weights go through the real loader, from a folder with our config beside them
    folder = tmp_path_factory.mktemp("seva_weights")
    (folder / "modelv1.1.safetensors").symlink_to(FIX / "weights_main.safetensors")
    (folder / "seva_config.json").write_text(json.dumps(main_config.to_dict()))
    return load_seva(str(folder))


# --- network ---------------------------------------------------------------------------------


def test_default_config_has_the_official_keys_and_shapes():
    rows = research_file("seva_state_dict_keys.tsv")
    expected = {}
    for line in rows.read_text().splitlines()[1:]:
        k, shape = line.split("\t")
        expected[k] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    with torch.device("meta"):
        model = SevaNet(SevaConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert sum(v.numel() for v in model.state_dict().values()) == 1_263_968_004


def test_depth2_config_key_shapes():
    cfg = js("config_depth2.json")
    with torch.device("meta"):
        model = SevaNet(SevaConfig(**cfg["seva_params"]))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == cfg["state_dict_shapes"]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", ["forward_square", "forward_nonsquare"])
def test_network_forward_every_block(net, case, channels_last):
    net.use_channels_last(channels_last)
    d = st(f"{case}.safetensors")
    T = js("forward_cases.json")[case]["num_frames_passed"]
    outputs = {}
    hooks = []
    for name, module in net.named_modules():
        if name.count(".") <= 2 and (name.startswith(("input_blocks.", "output_blocks.", "middle_block"))):
            hooks.append(module.register_forward_hook(lambda m, i, o, n=name: outputs.__setitem__(n, o)))
    hooks.append(net.time_embed.register_forward_hook(lambda m, i, o: outputs.__setitem__("emb", o)))
    with torch.no_grad():
        out = net(d["in/x"], d["in/t"], d["in/y"], d["in/dense_y"], T)
    for h in hooks:
        h.remove()
    close(timestep_embedding(d["in/t"], 32), d["t_emb_sinusoidal"], 1e-4)
    close(outputs["emb"], d["emb"], 1e-5, 1e-4)
    checked = 0
    for key, ref in d.items():
        if key.startswith("block/"):
            close(outputs[key[6:]], ref, 1e-5, 1e-4)
            checked += 1
        elif key.startswith("layer/"):
            close(outputs[key[6:]], ref, 1e-5, 1e-4)
            checked += 1
    assert checked >= 25
    close(out, d["out"], 1e-5, 1e-4)
    net.use_channels_last(False)


@pytest.mark.parametrize("depth", ["depth1", "depth2"])
@pytest.mark.parametrize("mode", ["joint3d", "spatial2d"])
def test_standalone_multiview_transformer(depth, mode):
    p = js("mvt_standalone.json")[depth]
    d = st("mvt_standalone.safetensors")
    w = st(p["weights_file"])
    weights = {k[len(p["weights_prefix"]) :]: v for k, v in w.items() if k.startswith(p["weights_prefix"])}
    mvt = MultiviewTransformer(p["channels"], p["heads"], p["dim_head"], p["depth"], p["context_dim"], "x", mode == "joint3d")
    mvt.load_state_dict(weights, strict=True)
    captured = {}
    mvt.proj_in.register_forward_hook(lambda m, i, o: captured.__setitem__("proj_in", o))
    for k, blk in enumerate(mvt.transformer_blocks):
        blk.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(f"spatial_block.{k}", o))
    for k, blk in enumerate(mvt.time_mix_blocks):
        blk.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(f"time_mix_block.{k}", o))
    with torch.no_grad():
        out = mvt(d[f"{depth}/in/x"], d[f"{depth}/in/context"], p["T"])
    close(out, d[f"{depth}/{mode}/out"], 1e-5, 1e-4)
    for k in captured:
        close(captured[k], d[f"{depth}/{mode}/{k}"], 1e-5, 1e-4)


def test_timestep_embedding():
    d = st("timestep_embedding.safetensors")
    close(timestep_embedding(d["t"], 32), d["emb_dim32"], 1e-6)
    close(timestep_embedding(d["t"], 320), d["emb_dim320"], 1e-4)


# --- schedules, denoiser, guidance, sampler --------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 5, 25, 50, 1000])
def test_schedules(n):
    d = st("schedules.safetensors")
    assert torch.equal(seva_schedule(n), d[f"ddpm_sigmas_n{n}"])
    assert torch.equal(SIGMA_TABLE, d["denoiser_sigmas"])


def test_denoiser_with_replacement_and_off_grid_sigma(net):
    d = st("denoiser.safetensors")
    cond = {k.split("/")[-1]: v for k, v in d.items() if k.startswith("in/cond/")}
    with torch.no_grad():
        D, tr = SevaDenoiser(net)(d["in/x"], d["in/sigma"], cond, js("denoiser.json")["T"], trace=True)
    assert torch.equal(tr.idx, d["out/idx"])
    assert torch.equal(tr.sigma_q, d["out/sigma_quantised"])
    assert torch.equal(tr.x_replaced, d["out/x_replaced"])
    close(tr.c_in, d["out/c_in"], 0, 1e-6)
    close(tr.network_input, d["out/network_input"], 1e-7, 1e-6)
    close(tr.network_output, d["out/network_output"], 1e-5, 1e-4)
    atol = (1e-5 * (1 + tr.sigma_q)).view(-1, 1, 1, 1).expand_as(D)
    assert bool(((D - d["out/denoised"]).abs() <= 1e-4 * d["out/denoised"].abs() + atol).all())


@pytest.mark.parametrize("case", list(js("guidance_scales.json")))
@pytest.mark.parametrize("guider", [0, 1, 2])
def test_guidance_scales(case, guider):
    p = js("guidance_scales.json")[case]
    d = st("guidance_scales.safetensors")
    s = guidance_scales(guider, p["cfg"], p["cfg_min"], d[f"{case}/in/c2w"], d[f"{case}/in/K"], d[f"{case}/in/input_frame_mask"])
    close(s, d[f"{case}/out/scale_guider{guider}"], 1e-6)


@pytest.mark.parametrize("guider", [0, 1, 2])
def test_sampler_steps_with_injected_noise(net, guider):
    si, p = st("sampler_inputs.safetensors"), js("sampler.json")
    ref = st(f"sampler_guider{guider}.safetensors")
    cond = {k.split("/")[-1]: v for k, v in si.items() if k.startswith("cond/")}
    unc = {k.split("/")[-1]: v for k, v in si.items() if k.startswith("uncond/")}
    # our conditioning builder gives exactly the reference's dicts
    u2, c2 = build_conditioning(cond["dense_vector"], si["input_frame_mask"], si["clean_latents"], si["clip_embeds"].mean(0))
    for k in cond:
        assert torch.equal(c2[k], cond[k]) and torch.equal(u2[k], unc[k]), k
    sig = seva_schedule(p["num_steps"])
    assert torch.equal(sig, ref["sigmas_schedule"])
    scales = guidance_scales(guider, p["cfg"], p["cfg_min"], si["c2w"], si["K"], si["input_frame_mask"])
    close(scales, ref["scale_per_frame"], 1e-6)
    x = si["noise_init"] * torch.sqrt(1 + sig[0] ** 2)
    assert torch.equal(x, ref["x_init_scaled"])
    rec = []
    sample_euler_edm(SevaDenoiser(net), x, sig, unc, cond, scales, lambda i, x: ref[f"step{i}/eps"], record=rec)
    tol = 1e-5 * (1 + 84.91633)
    for i, r in enumerate(rec):
        assert torch.equal(r.sigma_hat.expand(4), ref[f"step{i}/sigma_hat"])
        for name in ("x_noised", "denoised_cfg_batch", "denoised_guided", "x_next"):
            close(getattr(r, name), ref[f"step{i}/{name}"], tol, 1e-4)


# --- cameras -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(js("cameras_value_dict.json")))
def test_camera_normalisation_and_plucker(case):
    p, d = js("cameras_value_dict.json")[case], st("cameras_value_dict.safetensors")
    cams = C.window_cameras(d[f"{case}/in/c2ws"], d[f"{case}/in/Ks"], d[f"{case}/in/all_c2ws"], (p["H"], p["W"]), p["camera_scale"])
    big = case == "hugescene"
    close(cams.c2w, d[f"{case}/out/c2w"], 1e-6, 1e-5 if big else 1e-6)
    assert torch.equal(cams.K, d[f"{case}/out/K"])
    ref = d[f"{case}/out/plucker"]
    close(cams.plucker[:, :3], ref[:, :3], 1e-4 if big else 1e-6)
    close(cams.plucker[:, 3:], ref[:, 3:], 1e-4 if big else 1e-6 * (1 + float(ref[:, 3:].abs().max())))
    assert torch.equal(cams.centre.valid.to(torch.uint8), d[f"{case}/debug/valid_mask"])
    close(cams.centre.median, d[f"{case}/debug/median"], 1e-6, 1e-5 if big else 1e-6)
    close(cams.centre.centroid, d[f"{case}/debug/centroid"], 1e-6, 1e-5 if big else 1e-6)
    close(cams.centre.threshold, d[f"{case}/debug/threshold"], 1e-6, 1e-5 if big else 1e-6)
    close(torch.tensor([cams.scale], dtype=torch.float32), d[f"{case}/debug/scale_factor"], 1e-6, 1e-6)
    cond = torch.zeros(p["T"], dtype=torch.uint8)
    cond[p["cond_slots"]] = 1
    assert torch.equal(cond, d[f"{case}/out/cond_frames_mask"])


def test_plucker_with_another_reference_camera_and_default_intrinsics():
    d = st("cameras_plucker.safetensors")
    pl = C.plucker(torch.linalg.inv(d["general/in/w2c"]), d["general/in/Ks"], 6, 10, ref=js("cameras_plucker.json")["general"]["src_index"])
    close(pl, d["general/out/plucker"], 1e-6 * (1 + float(d["general/out/plucker"].abs().max())))
    for aspect, name in [(3 / 4, "0.7500"), (1.0, "1.0000"), (4 / 3, "1.3333"), (16 / 9, "1.7778")]:
        close(C.default_intrinsics(aspect=aspect), d[f"default_intrinsics/aspect_{name}"], 0, 1e-6)
    for aspect in (0.5, 1.5):
        got = C.default_intrinsics(d["default_intrinsics/fov_batch_in"], aspect)
        assert got.dtype == torch.float64
        close(got, d[f"default_intrinsics/fov_batch_f64_aspect_{aspect:.4f}"], 0, 1e-6)


def test_camera_distances():
    d = st("cameras_misc.safetensors")
    ang, trans = C.camera_distances(d["camera_dist/in/source_c2ws"], d["camera_dist/in/target_c2ws"])
    close(ang, d["camera_dist/out/rotation_deg"], 2e-3)
    close(trans, d["camera_dist/out/translation"], 1e-6)


PRESETS = [o for o in js("cameras_misc.json")["presets"]["options"] if o != "spiral"]  # spiral: no exact formula in the spec


@pytest.mark.parametrize("option", PRESETS)
def test_preset_trajectories(option):
    d, p = st("cameras_misc.safetensors"), js("cameras_misc.json")["presets"]
    c2w, fov = C.preset_trajectory(option, p["num_frames"], torch.tensor(p["look_at"]), torch.tensor(p["up_direction"]), fov=p["fov"])
    key = option.replace(" ", "_")
    close(c2w, d[f"preset/{key}/c2w"].float(), 1e-5)
    close(fov, d[f"preset/{key}/fov"], 1e-9)


# --- preprocessing ---------------------------------------------------------------------------


def test_image_and_intrinsics_transform():
    d, p = st("preprocess_transform.safetensors"), js("preprocess_transform.json")
    for c in p["small_cases"]:
        size = tuple(c["size"]) if isinstance(c["size"], list) else c["size"]
        for kin, kout in (("K_pixel", "K_from_pixel"), ("K_normalised", "K_from_normalised")):
            img, K = preprocess.transform_img_and_K(
                d[f"{c['image']}/in/image"], size, d[f"{c['image']}/in/{kin}"], c["mode"], c["size_stride"]
            )
            assert list(img.shape[-2:]) == c["out_hw"]
            close(img, d[f"{c['key']}/out/image"], 1e-6)
            ref = d[f"{c['key']}/out/{kout}"]
            close(K, ref, 1e-6, 1e-6)
        H, W = c["out_hw"]
        _, K_pix = preprocess.transform_img_and_K(
            d[f"{c['image']}/in/image"], size, d[f"{c['image']}/in/K_pixel"], c["mode"], c["size_stride"]
        )
        close(C.normalise_pixel_K(K_pix[0], W, H), d[f"{c['key']}/out/K_from_pixel_then_normalised"], 1e-6, 1e-6)
    for c in p["large_geometry_only"]:
        h, w = c["in_hw"]
        size = tuple(c["size"]) if isinstance(c["size"], list) else c["size"]
        img, K = preprocess.transform_img_and_K(torch.zeros(1, 3, h, w), size, torch.tensor([c["K_pixel_in"]]), c["mode"], c["size_stride"])
        assert list(img.shape[-2:]) == c["out_hw"]
        close(K[0], torch.tensor(c["K_pixel_out"]), 1e-6, 1e-6)
        _, K = preprocess.transform_img_and_K(
            torch.zeros(1, 3, h, w), size, torch.tensor([c["K_normalised_in"]]), c["mode"], c["size_stride"]
        )
        close(K[0], torch.tensor(c["K_normalised_in_out"]), 1e-6, 1e-6)
    for r in p["resizing_factor"]:
        assert preprocess.resizing_factor(tuple(r["target_hw"]), tuple(r["current_hw"]), r["cover_target"]) == r["factor"]
    for r in p["wh_fixed_shortest_side"]:
        assert list(preprocess.size_with_short_side(r["w"], r["h"], r["size"])) == r["out_wh"]


@pytest.mark.parametrize("case", ["down_288x384", "mixed_40x700"])
def test_clip_preprocessing(case):
    d = st("clip_preprocess.safetensors")
    img = d[f"{case}/in/image_u8"].float() / 128 - 1
    close(preprocess.clip_preprocess(img), d[f"{case}/out/preprocessed"], 3e-4)


# --- windows -----------------------------------------------------------------------------------


def _chunk_cameras(entry, cams):
    def get(name):
        if "[" in name:
            base, key = name.rstrip("]").split("[")
            return cams[base][entry[key]]
        return cams[name]

    return get(entry["cameras"]["input"]), get(entry["cameras"]["target"])


@pytest.mark.parametrize("name", list(js("chunking.json")["chunk_calls"]))
def test_chunking_calls_and_padding(name):
    entry = js("chunking.json")["chunk_calls"][name]
    c = entry["call"]
    ic, tc = _chunk_cameras(entry, st("chunking_cameras.safetensors"))
    got = chunking.chunk_input_and_test(
        c["chunk_strategy"], c["T"], ic, tc, c["input_ords"], c["test_ords"], c["gt_input_inds"], c["task"], c["options"]
    )
    assert got == entry["chunks"]
    for chunk, window in zip(entry["chunks"], entry["windows"], strict=True):
        assert chunking.pad_window(chunk).__dict__ == window


@pytest.mark.parametrize("name", list(js("chunking.json")["two_pass_scenarios"]))
def test_two_pass_plans(name):
    s = js("chunking.json")["two_pass_scenarios"][name]
    cams = st("chunking_cameras.safetensors")
    plan = chunking.plan_two_pass(
        cams[s["cameras"]["input"]],
        cams[s["cameras"]["target"]],
        s["T_requested"],
        s["second_pass"]["call"]["chunk_strategy"],
        s["first_pass"]["call"]["options"],
    )
    assert plan.num_anchors == s["num_anchors"] and plan.T == s["T_after_infer_prior_stats"]
    assert plan.anchor_ords == s["anchor_ords"] and plan.anchor_indices == s["anchor_camera_indices_in_all"]
    assert plan.first_pass == s["first_pass"]["chunks"]
    assert plan.pool_argsort == s["second_pass_pool_argsort"] and plan.pool_ords == s["second_pass_pool_ords"]
    assert plan.pool_gt_inds == s["second_pass_gt_input_inds"]
    assert plan.second_pass == s["second_pass"]["chunks"]
    for part in ("first_pass", "second_pass"):
        for chunk, window in zip(s[part]["chunks"], s[part]["windows"], strict=True):
            assert chunking.pad_window(chunk).__dict__ == window


def test_anchor_rules_and_nearest_sources():
    d = js("chunking.json")
    for e in d["infer_prior_stats"]:
        assert chunking.infer_prior_stats(e["T"], e["num_input_frames"], e["num_total_frames"], e["options"]) == (
            e["num_prior_frames"],
            e["T_after"],
        ), e
    portable = [e for e in d["infer_prior_inds"] if e["portable"]]
    assert len(portable) >= 6
    for e in portable:
        assert (
            chunking.infer_prior_inds(e["num_frames"], e["num_prior_frames"], e["input_frame_indices"], e["chunk_strategy"])
            == e["prior_frame_indices"]
        )
    fn = d["find_nearest_source_inds"]
    cams = st("chunking_cameras.safetensors")
    for c in fn["cases"]:
        got = chunking.find_nearest_source_inds(cams[fn["cameras"]["source"]], cams[fn["cameras"]["target"]], c["nearest_num"], c["mode"])
        assert got.tolist() == c["result"]


# --- loader errors -----------------------------------------------------------------------------


def test_loader_names_missing_and_unexpected_keys(tmp_path, main_config):
    from safetensors.torch import save_file

    w = st("weights_main.safetensors")
    w.pop("out.2.bias")
    w["extra.weight"] = torch.zeros(2)
    save_file(w, tmp_path / "modelv1.1.safetensors")
    (tmp_path / "seva_config.json").write_text(json.dumps(main_config.to_dict()))
    with pytest.raises(SevaWeightsError, match=r"1 missing, 1 unexpected.*Missing: out\.2\.bias.*Unexpected: extra\.weight"):
        load_seva(str(tmp_path))


def test_loader_reports_wrong_shapes_and_absent_files(tmp_path, main_config):
    from safetensors.torch import save_file

    w = st("weights_main.safetensors")
    w["out.2.bias"] = torch.zeros(5)
    save_file(w, tmp_path / "model.safetensors")
    (tmp_path / "seva_config.json").write_text(json.dumps(main_config.to_dict()))
    with pytest.raises(SevaWeightsError, match=r"wrong shape: out\.2\.bias \(5,\) != \(4,\)"):
        load_seva(str(tmp_path / "model.safetensors"))
    from backend.models.weights import ModelUnavailable

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailable, match="no SEVA weights in .*expected modelv1.1.safetensors"):
        load_seva(str(empty))
    (empty / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="safetensors only"):
        load_seva(str(empty / "weights.ckpt"))


def test_loader_offline_hub_message(monkeypatch, tmp_path):
    from backend.models.weights import ModelUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailable, match="stabilityai/stable-virtual-camera is not in the local cache and this machine is offline"):
        load_seva("seva-1.1")


def test_loader_keeps_or_casts_dtype(tmp_path, main_config):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "modelv1.1.safetensors").symlink_to(FIX / "weights_main.safetensors")
    (folder / "seva_config.json").write_text(json.dumps(main_config.to_dict()))
    assert load_seva(str(folder)).dtype == torch.float32
    half = load_seva(str(folder), dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in half.parameters())
    # and the bf16 network runs (GroupNorms in float32) close to the float32 one
    d = st("forward_square.safetensors")
    with torch.no_grad():
        ref = load_seva(str(folder))(d["in/x"], d["in/t"], d["in/y"], d["in/dense_y"])
        out = half(d["in/x"].bfloat16(), d["in/t"], d["in/y"], d["in/dense_y"])
    assert out.dtype == torch.bfloat16
    assert float((out.float() - ref).abs().mean()) < 0.05 * float(ref.abs().mean())
