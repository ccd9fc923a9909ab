"""The main job end to end, headless: a small scene, a turntable, coupled relighting, write-back.

    python demo/relight_turntable.py --out outputs/demo [--prompt "beach sunset lighting"] [--views 8]

1. builds a scene with Blender (bpy): a monkey and a box, 8 turntable cameras;
2. renders every view with exact alpha and depth (Cycles, CPU);
3. runs `relight_text` through the job runner: IC-Light edits the reference view, SEVA generates
   the others coupled to per-view IC-Light trajectories;
4. also runs plain per-view IC-Light (independent edits) for comparison;
5. writes back image strips and a projected texture, saves the .blend;
6. writes contact_sheet.png (inputs | independent edits | coupled | consistency heat map) and report.json.

Real weights are used when they are in the Hugging Face cache (SEVA v1.1, IC-Light fc + Realistic
Vision 5.1, CLIP ViT-H, SD2.1 VAE); otherwise tiny random models, stated on the sheet and in the
report. Either way the whole chain runs; only the tiny models' pictures are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def real_weights_present() -> bool:
    """True when every model of the real path is in the local hub cache (nothing is downloaded here)."""
    from backend.models.weights import in_cache
    from backend.registry import MODELS, TASK_MODELS

    return all(in_cache(MODELS[k]) for k in TASK_MODELS["relight_text"])


def build_scene(n_views: int, size: int):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 16, False
    scene.render.resolution_x = scene.render.resolution_y = size
    world = bpy.data.worlds.new("studio")
    world.color = (0.05, 0.05, 0.05)
    scene.world = world
    bpy.ops.mesh.primitive_monkey_add(location=(0, 0, 0.3))
    monkey = bpy.context.active_object
    monkey.modifiers.new("smooth", "SUBSURF").levels = 1
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(0, 0, -0.8))
    box = bpy.context.active_object
    for obj, colour in ((monkey, (0.8, 0.35, 0.1, 1)), (box, (0.2, 0.4, 0.8, 1))):
        mat = bpy.data.materials.new(obj.name)
        bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
        bsdf.inputs["Base Color"].default_value = colour
        obj.data.materials.append(mat)
    bpy.ops.object.light_add(type="SUN", location=(2, -2, 4))
    bpy.context.active_object.data.energy = 3.0
    return scene, [monkey, box]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--prompt", default="beach sunset lighting")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="render and working size (real weights: use 576)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lam", type=float, default=0.015)
    args = ap.parse_args()

    import bpy  # the bpy wheel is part of the install
    import numpy as np
    from PIL import Image

    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        import shutil

        if not (out / "report.json").exists():
            print(f"error: {out} is not empty and not a previous demo; choose another --out", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    real = real_weights_present()
    models = {"multiview": "seva-1.1", "editor": "ic-light-fc"} if real else {"multiview": "seva-tiny", "editor": "ic-light-tiny"}
    steps = args.steps or (50 if real else 4)
    size = args.size if not real or args.size >= 512 else 576
    print(f"models: {models['multiview']} + {models['editor']}" + ("" if real else "  (TINY RANDOM WEIGHTS: no real weights in the cache)"))

    # the extension, as Blender would load it
    link = out / ".addon"
    link.mkdir()
    (link / "coupled_edit").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(link))
    import importlib

    scene, objects = build_scene(args.views, size)
    ce = importlib.import_module("coupled_edit.api")
    cams = ce.build_turntable(bpy.context, objects, count=args.views, elevations_deg=(20.0,))
    scene.camera = cams[0]
    print(f"scene: {len(objects)} objects, {len(cams)} cameras, {size}x{size}")

    def progress(st):
        print(f"\r{st.fraction:5.0%} {st.message[:60]:60s}", end="", flush=True)

    res = ce.run(
        scene,
        cams,
        "relight_text",
        out / "job",
        passes=True,
        edit={"prompt": args.prompt},
        models=models,
        sampling={"steps": steps, "lam": args.lam},
        multiview={"size": size, "window": min(21, args.views)},
    )
    print()
    if not res.ok:
        print(f"job {res.status.state}: {res.status.message}", file=sys.stderr)
        return 1
    job = res.folder
    result = json.loads((job / "result.json").read_text())
    meta = result["metadata"]

    # independent per-view IC-Light edits of the same views, for comparison
    from backend.consistency import ViewGeometry, consistency, heatmap_rgb
    from backend.media import side_by_side, tensor_to_pil
    from backend.models.editors.ic_light import load_ic_light
    from backend.sampling import sample_coupled

    spec = json.loads((job / "job.json").read_text())
    rgba = [np.asarray(Image.open(job / "inputs" / v["image"]).convert("RGBA"), dtype=np.float64) for v in spec["views"]]
    ic = load_ic_light("fc", base="ic-light-base" if real else "tiny")
    conds = ic.condition_latents([a[..., :3] for a in rgba], [a[..., 3] / 255 for a in rgba])
    p = ic.participant("editor", conds, args.prompt, steps, 2.0, [10_000 + i for i in range(len(rgba))])
    independent = [tensor_to_pil(x) for x in ic.decode(sample_coupled([p], step="ddpm").latents["editor"]).cpu()]

    def geometry(images):
        return [
            ViewGeometry(
                np.asarray(im.convert("RGB"), dtype=np.float64) / 255,
                np.load(job / "inputs" / v["depth"]),
                np.array(v["K"]),
                np.array(v["c2w"]),
            )
            for im, v in zip(images, spec["views"], strict=True)
        ]

    coupled = [
        Image.open(job / o["path"]).convert("RGB")
        for o in sorted((o for o in result["outputs"] if o["view"]), key=lambda o: [v["name"] for v in spec["views"]].index(o["view"]))
    ]
    rep_c, rep_i = consistency(geometry(coupled)), consistency(geometry(independent))

    # write-back: strips and a projected texture, then the .blend
    strips = ce.apply_as_strips(scene, cams, job)
    tex = ce.apply_as_texture(bpy.context, objects, cams, job, size=256)
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "relit_turntable.blend"))

    names = [v["name"].replace("Coupled Edit Rig ", "view ") for v in spec["views"]]
    label = "" if real else " | TINY RANDOM WEIGHTS"
    rows = [
        side_by_side([Image.fromarray(a.astype(np.uint8), "RGBA").convert("RGB") for a in rgba], names, footer="inputs (Cycles renders)"),
        side_by_side(independent, names, footer=f"independent per-view IC-Light: consistency {rep_i.mean:.3f}"),
        side_by_side(coupled, names, footer=f"coupled with SEVA (lam {args.lam}): consistency {rep_c.mean:.3f}{label}"),
        side_by_side([Image.fromarray(heatmap_rgb(h)) for h in rep_c.heatmaps], names, footer="coupled: reprojection error heat map"),
    ]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    sheet.save(out / "contact_sheet.png")
    report = {
        "prompt": args.prompt,
        "models": models,
        "real_weights": real,
        "views": len(cams),
        "size": size,
        "steps": steps,
        "lam": args.lam,
        "consistency": {"coupled": rep_c.to_dict(), "independent": rep_i.to_dict()},
        "write_back": {"strip_channel": strips.channel, "textures": tex.images, "texture_coverage": tex.coverage},
        "job": str(job),
        "timings_s": {"job": meta.get("timings_s", {}), "total": time.perf_counter() - t0},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    import shutil

    shutil.rmtree(link)
    print(f"consistency (mean |RGB diff| of mutually visible pixels, 0..1): coupled {rep_c.mean:.3f}, independent {rep_i.mean:.3f}")
    shown = Path(os.path.relpath(out)) if out.is_relative_to(Path.cwd()) else out  # as the README shows it
    print(f"wrote {shown / 'contact_sheet.png'}")
    print(f"wrote {shown / 'report.json'}")
    print(f"wrote {shown / 'relit_turntable.blend'} (strips on sequencer channel {strips.channel}, textures on {', '.join(tex.images)})")
    print(f"took {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
