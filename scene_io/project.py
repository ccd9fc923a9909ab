"""Projected-texture write-back: every edited view baked into one new UV texture per object.

Per object and view, Cycles bakes (EMIT) a shader that projects the view's image through the
camera's exact K (research/blender.md §4c) with a weight = visible (depth test against the view's
depth pass) x inside the frame x facing^2 x a feather towards the frame border. The weighted
colours and the weights are summed in numpy over all views (any number of cameras, no UV-slot
limit), normalised, and texels no view saw are filled by dilation. The result goes into a new
image and a new material linked to the object's slots at object level, so the mesh's own
materials are untouched (setting the slots back to Data restores them). Modifiers are honoured:
baking uses the evaluated mesh.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from .cameras import camera_matrices
from .render import BACKGROUND_DEPTH

FEATHER = 0.04  # fraction of the frame over which weights fade out at its border
DEPTH_TOLERANCE = 0.01  # relative: a point is visible when its depth is within 1 % of the view's depth


@dataclass
class ProjectionResult:
    images: dict[str, str] = field(default_factory=dict)  # object -> baked image
    materials: dict[str, str] = field(default_factory=dict)  # object -> new material
    coverage: dict[str, float] = field(default_factory=dict)  # object -> fraction of used texels seen by a view
    notes: list[str] = field(default_factory=list)  # what the user should know (renamed cameras)


def _image_from_array(name: str, rgba: np.ndarray, colorspace: str) -> bpy.types.Image:
    """(H, W, 4) float array, row 0 at the top -> a float Blender image (rows bottom-up)."""
    h, w = rgba.shape[:2]
    img = bpy.data.images.new(name, w, h, alpha=True, float_buffer=True)
    img.colorspace_settings.name = colorspace
    img.pixels.foreach_set(np.ascontiguousarray(rgba[::-1], dtype=np.float32).ravel())
    return img


def _pixels(img: bpy.types.Image) -> np.ndarray:
    w, h = img.size
    buf = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(buf)
    return buf.reshape(h, w, 4)


def _math(nodes, links, op: str, a, b=None, value_b: float | None = None):
    n = nodes.new("ShaderNodeMath")
    n.operation = op
    links.new(a, n.inputs[0])
    if b is not None:
        links.new(b, n.inputs[1])
    elif value_b is not None:
        n.inputs[1].default_value = value_b
    return n.outputs[0]


def _projection_material(
    cam: bpy.types.Object,
    K: np.ndarray,
    size_wh: tuple[int, int],
    image: bpy.types.Image,
    depth: bpy.types.Image | None,
    target: bpy.types.Image,
    weight_only: bool,
) -> bpy.types.Material:
    """Emission = projected colour x weight (or the weight alone); ``target`` is the active bake node."""
    W, H = size_wh
    mat = bpy.data.materials.new("ce_bake_tmp")
    if not mat.node_tree:  # Blender 4.x creates the tree on use_nodes
        mat.use_nodes = True
    nt = mat.node_tree
    nodes, links = nt.nodes, nt.links
    nodes.clear()
    tc = nodes.new("ShaderNodeTexCoord")
    tc.object = cam
    sep = nodes.new("ShaderNodeSeparateXYZ")
    links.new(tc.outputs["Object"], sep.inputs[0])
    x, y, z = sep.outputs[0], sep.outputs[1], sep.outputs[2]
    negz = _math(nodes, links, "MULTIPLY", z, value_b=-1.0)
    u = _math(
        nodes,
        links,
        "ADD",
        _math(nodes, links, "MULTIPLY", _math(nodes, links, "DIVIDE", x, negz), value_b=K[0, 0] / W),
        value_b=K[0, 2] / W,
    )
    v = _math(
        nodes,
        links,
        "ADD",
        _math(nodes, links, "MULTIPLY", _math(nodes, links, "DIVIDE", y, negz), value_b=K[1, 1] / H),
        value_b=1 - K[1, 2] / H,
    )
    uv = nodes.new("ShaderNodeCombineXYZ")
    links.new(u, uv.inputs[0])
    links.new(v, uv.inputs[1])
    tex = nodes.new("ShaderNodeTexImage")
    tex.image, tex.extension, tex.interpolation = image, "CLIP", "Linear"
    links.new(uv.outputs[0], tex.inputs[0])
    # weight: in front, inside the frame with a feathered border, facing the camera, not occluded
    edge = _math(
        nodes,
        links,
        "MINIMUM",
        _math(nodes, links, "MINIMUM", u, _math(nodes, links, "SUBTRACT", _one(nodes), u)),
        _math(nodes, links, "MINIMUM", v, _math(nodes, links, "SUBTRACT", _one(nodes), v)),
    )
    feather = _math(
        nodes,
        links,
        "MINIMUM",
        _math(nodes, links, "MAXIMUM", _math(nodes, links, "DIVIDE", edge, value_b=FEATHER), value_b=0.0),
        value_b=1.0,
    )
    front = _math(nodes, links, "GREATER_THAN", negz, value_b=1e-6)
    geo = nodes.new("ShaderNodeNewGeometry")
    to_cam = nodes.new("ShaderNodeVectorMath")
    to_cam.operation = "SUBTRACT"
    to_cam.inputs[0].default_value = tuple(cam.matrix_world.translation)
    links.new(geo.outputs["Position"], to_cam.inputs[1])
    norm = nodes.new("ShaderNodeVectorMath")
    norm.operation = "NORMALIZE"
    links.new(to_cam.outputs[0], norm.inputs[0])
    dot = nodes.new("ShaderNodeVectorMath")
    dot.operation = "DOT_PRODUCT"
    links.new(geo.outputs["True Normal"], dot.inputs[0])
    links.new(norm.outputs[0], dot.inputs[1])
    facing = _math(nodes, links, "MAXIMUM", dot.outputs["Value"], value_b=0.0)
    weight = _math(
        nodes, links, "MULTIPLY", _math(nodes, links, "MULTIPLY", facing, facing), _math(nodes, links, "MULTIPLY", feather, front)
    )
    if depth is not None:
        dtex = nodes.new("ShaderNodeTexImage")
        dtex.image, dtex.extension, dtex.interpolation = depth, "EXTEND", "Closest"
        links.new(uv.outputs[0], dtex.inputs[0])
        limit = _math(nodes, links, "MULTIPLY", dtex.outputs["Color"], value_b=1 + DEPTH_TOLERANCE)
        visible = _math(nodes, links, "LESS_THAN", negz, _math(nodes, links, "ADD", limit, value_b=1e-4))
        weight = _math(nodes, links, "MULTIPLY", weight, visible)
    emit = nodes.new("ShaderNodeEmission")
    if weight_only:
        links.new(weight, emit.inputs["Color"])
    else:
        mul = nodes.new("ShaderNodeMix")
        mul.data_type, mul.blend_type = "RGBA", "MULTIPLY"
        mul.inputs["Factor"].default_value = 1.0
        links.new(tex.outputs["Color"], mul.inputs[6])
        links.new(weight, mul.inputs[7])
        links.new(mul.outputs[2], emit.inputs["Color"])
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(emit.outputs[0], out.inputs["Surface"])
    bake = nodes.new("ShaderNodeTexImage")
    bake.image = target
    nodes.active = bake
    return mat


def _one(nodes):
    v = nodes.new("ShaderNodeValue")
    v.outputs[0].default_value = 1.0
    return v.outputs[0]


def ensure_uv_map(context, obj: bpy.types.Object) -> str:
    """The object's active UV map; a Smart UV Project one is added when it has none."""
    if obj.data.uv_layers:
        return obj.data.uv_layers.active.name
    view_layer = context.view_layer
    prev_active, prev_sel = view_layer.objects.active, [o for o in context.selected_objects]
    try:
        for o in prev_sel:
            o.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        bpy.ops.object.mode_set(mode="EDIT")
        bpy.ops.mesh.select_all(action="SELECT")
        bpy.ops.uv.smart_project(island_margin=0.02)
        bpy.ops.object.mode_set(mode="OBJECT")
    finally:
        obj.select_set(False)
        for o in prev_sel:
            o.select_set(True)
        view_layer.objects.active = prev_active
    obj.data.uv_layers[0].name = "Coupled Edit UV"
    return obj.data.uv_layers[0].name


def _bake(context, obj: bpy.types.Object, mat: bpy.types.Material) -> None:
    """EMIT bake of ``mat`` on every face of ``obj``; the object's slots are restored afterwards."""
    saved = [(s.link, s.material) for s in obj.material_slots]
    added_slot = not obj.material_slots
    if added_slot:
        obj.data.materials.append(None)
    view_layer = context.view_layer
    prev_active, prev_sel = view_layer.objects.active, list(context.selected_objects)
    try:
        for s in obj.material_slots:
            s.link = "OBJECT"
            s.material = mat
        for o in prev_sel:
            o.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        with quiet_stdout():  # Blender prints "Baking map saved to internal image" for each of the many bakes
            bpy.ops.object.bake(type="EMIT", use_clear=False, margin=0, target="IMAGE_TEXTURES")
    finally:
        for s, (link, m) in zip(obj.material_slots, saved, strict=False):
            s.material = None
            s.link = link
            if link == "OBJECT":
                s.material = m
        if added_slot:
            obj.data.materials.pop()
        obj.select_set(False)
        for o in prev_sel:
            o.select_set(True)
        view_layer.objects.active = prev_active


@contextlib.contextmanager
def quiet_stdout():
    """stdout is dropped meanwhile, at both levels: Blender writes operator reports through Python's
    sys.stdout and other messages through C's; stderr (warnings, errors) is untouched."""
    import io
    import os
    import sys

    sys.stdout.flush()
    try:
        fd = sys.__stdout__.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (some GUI builds): nothing to hide
        yield
        return
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null, contextlib.redirect_stdout(io.StringIO()):
            _flush_c_stdio()
            os.dup2(null.fileno(), fd)
            yield
            _flush_c_stdio()  # Blender's printf output sits in C's buffer: drop it before stdout comes back
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _flush_c_stdio() -> None:
    import ctypes
    import sys

    try:
        libc = ctypes.CDLL("msvcrt" if sys.platform == "win32" else None)
        libc.fflush(None)
    except (OSError, AttributeError):
        pass


def dilate(rgb: np.ndarray, known: np.ndarray, steps: int = 64) -> np.ndarray:
    """Fill unknown texels from known neighbours, ring by ring (no colour bleeding into seen texels)."""
    rgb, known = rgb.copy(), known.copy()
    for _ in range(steps):
        if known.all():
            break
        acc = np.zeros_like(rgb)
        cnt = np.zeros(known.shape, dtype=np.float32)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            k = np.roll(known, (dy, dx), axis=(0, 1))
            acc += np.roll(rgb, (dy, dx), axis=(0, 1)) * k[..., None]
            cnt += k
        grow = ~known & (cnt > 0)
        rgb[grow] = acc[grow] / cnt[grow][:, None]
        known = known | grow
    return rgb


def project_views(*args, **kwargs) -> ProjectionResult:
    """``project_views_steps`` run to its end in one call (scripts)."""
    return run_steps(project_views_steps(*args, **kwargs))


def run_steps(gen: Generator[tuple[int, int, str], None, ProjectionResult]) -> ProjectionResult:
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def project_views_steps(
    context,
    objects: Sequence[bpy.types.Object],
    cameras: Sequence[bpy.types.Object],
    images: dict[str, Path],
    depths: dict[str, Path] | None = None,
    size: int = 1024,
    shading: str = "EMISSION",
    label: str = "projection",
    samples: int = 4,
    poses: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] | None = None,
) -> Generator[tuple[int, int, str], None, ProjectionResult]:
    """Yields (bakes done, bakes in all, message) after every bake, so a timer can run it without
    freezing Blender; closing the generator (cancel) undoes everything, as an error does. Returns the
    ``ProjectionResult``.

    Bakes the views of ``cameras`` (``images`` by camera name) into a new texture per object.

    ``poses`` (view name -> K, OpenCV c2w, (width, height)), as a job stored them, are used instead of
    the cameras' current state (a later resize or move would misproject); views in ``poses`` whose camera
    no longer exists under that name are projected from their stored pose too. All or nothing: every
    object is checked before anything changes, and the new materials are applied only once every
    texture has baked."""
    if shading not in ("EMISSION", "BASE_COLOR"):
        raise ValueError("shading must be EMISSION or BASE_COLOR")
    _check_targets(objects)
    scene = context.scene
    saved_engine, saved_samples = scene.render.engine, scene.cycles.samples
    result = ProjectionResult()
    tmp_images, tmp_mats, tmp_objects, finals = [], [], [], {}
    uv_before = {o.name: set(o.data.uv_layers.keys()) for o in objects}
    todo = [(c.name, c) for c in cameras if c.name in images]
    if poses:
        in_rig = {c.name for c in cameras}
        renamed = [n for n in poses if n in images and n not in in_rig and n not in scene.objects]
        if renamed:
            result.notes.append(f"views {renamed} have no camera of that name any more (renamed?): projected from their stored poses")
        todo += [(n, None) for n in renamed]
    try:
        scene.render.engine = "CYCLES"
        scene.cycles.samples = samples
        views = []
        for name, cam in todo:
            img = bpy.data.images.load(str(images[name]), check_existing=False)
            img.colorspace_settings.name = "sRGB"
            tmp_images.append(img)
            if poses and name in poses:
                K, c2w, wh = poses[name]
                pose = _pose_object(scene, c2w)
                tmp_objects.append(pose)
            else:
                (K, _), wh, pose = camera_matrices(cam, scene), img.size[:], cam
            dimg = None
            if depths and name in depths:
                d = np.load(depths[name]).astype(np.float32)
                d = np.where(np.isfinite(d), d, BACKGROUND_DEPTH)
                dimg = _image_from_array(f"ce_depth_{name}", np.dstack([d, d, d, np.ones_like(d)]), "Non-Color")
                tmp_images.append(dimg)
            views.append((pose, np.asarray(K), tuple(wh), img, dimg))
        if not views:
            raise ValueError("no view images for these cameras")
        if tmp_objects:
            context.view_layer.update()
        total, done = len(objects) * len(views) * 2, 0
        for obj in objects:
            uv_name = ensure_uv_map(context, obj)
            target = bpy.data.images.new(f"ce_target_{obj.name}", size, size, float_buffer=True)
            tmp_images.append(target)
            acc = np.zeros((size, size, 3), dtype=np.float64)
            wsum = np.zeros((size, size), dtype=np.float64)
            used = np.zeros((size, size), dtype=bool)
            for pose, K, wh, img, dimg in views:
                for weight_only in (False, True):
                    mat = _projection_material(pose, K, wh, img, dimg, target, weight_only)
                    tmp_mats.append(mat)
                    target.pixels.foreach_set(np.zeros(size * size * 4, dtype=np.float32))  # alpha 0 marks unwritten texels
                    _bake(context, obj, mat)
                    done += 1
                    yield done, total, f"baking {obj.name}: {done}/{total}"
                    px = _pixels(target)[::-1]
                    if weight_only:
                        wsum += px[..., 0]
                        used |= px[..., 3] > 0.5  # texels the bake wrote: inside the UV islands
                    else:
                        acc += px[..., :3]
            seen = wsum > 1e-4
            rgb = np.where(seen[..., None], acc / np.maximum(wsum, 1e-12)[..., None], 0.0)
            rgb = dilate(rgb, seen)
            final = _image_from_array(
                f"CE {label} {obj.name}", np.dstack([rgb, np.ones((size, size))]).astype(np.float32), "Linear Rec.709"
            )
            finals[obj.name] = (obj, final, uv_name)
            result.coverage[obj.name] = float((seen & used).sum() / max(used.sum(), 1))
        for name, (obj, final, uv_name) in finals.items():  # every bake succeeded: now change the objects
            final.pack()
            result.images[name] = final.name
            result.materials[name] = _apply_material(obj, final, uv_name, shading, f"CE {label} {name}").name
    except BaseException:
        for _, final, _ in finals.values():
            if final.name not in result.images.values():
                bpy.data.images.remove(final)
        for obj in objects:  # UV maps this call added
            for uv in [u for u in obj.data.uv_layers if u.name not in uv_before[obj.name]]:
                obj.data.uv_layers.remove(uv)
        raise
    finally:
        scene.render.engine, scene.cycles.samples = saved_engine, saved_samples
        for m in tmp_mats:
            bpy.data.materials.remove(m)
        for i in tmp_images:
            bpy.data.images.remove(i)
        for o in tmp_objects:
            bpy.data.objects.remove(o)
    return result


def _check_targets(objects: Sequence[bpy.types.Object]) -> None:
    """Every object a projection would change, checked before any is: meshes of this file, with faces."""
    bad = []
    for o in objects:
        if o.type != "MESH":
            bad.append(f"{o.name!r} is a {o.type.lower()} (convert it to a mesh: Object > Convert > Mesh)")
        elif o.library is not None or o.data.library is not None or getattr(o, "override_library", None) is not None:
            bad.append(f"{o.name!r} is linked from another file (make it local: Object > Relations > Make Local)")
        elif not o.data.polygons:
            bad.append(f"{o.name!r} has no faces to texture")
    if bad:
        raise ValueError("projected textures need local mesh objects; nothing was changed: " + "; ".join(bad))


def _pose_object(scene: bpy.types.Scene, c2w_opencv: np.ndarray) -> bpy.types.Object:
    """A temporary empty at a stored camera pose (Blender's camera frame), for the projection's coordinates."""
    import mathutils

    empty = bpy.data.objects.new("ce_pose_tmp", None)
    empty.matrix_world = mathutils.Matrix((np.asarray(c2w_opencv, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist())
    scene.collection.objects.link(empty)
    return empty


def _apply_material(obj: bpy.types.Object, image: bpy.types.Image, uv_name: str, shading: str, name: str) -> bpy.types.Material:
    """A new material with the baked texture, linked to the object's slots at object level."""
    mat = bpy.data.materials.new(name)
    if not mat.node_tree:
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    uvn = nodes.new("ShaderNodeUVMap")
    uvn.uv_map = uv_name
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    links.new(uvn.outputs[0], tex.inputs[0])
    out = nodes.new("ShaderNodeOutputMaterial")
    if shading == "EMISSION":
        sh = nodes.new("ShaderNodeEmission")
        links.new(tex.outputs["Color"], sh.inputs["Color"])
    else:
        sh = nodes.new("ShaderNodeBsdfPrincipled")
        links.new(tex.outputs["Color"], sh.inputs["Base Color"])
    links.new(sh.outputs[0], out.inputs["Surface"])
    if not obj.material_slots:
        obj.data.materials.append(None)
    for s in obj.material_slots:
        s.link = "OBJECT"
        s.material = mat
    return mat


def view_depths(
    scene: bpy.types.Scene, cameras: Sequence[bpy.types.Object], folder: Path, objects: Sequence[bpy.types.Object]
) -> dict[str, Path]:
    """Depth passes of ``cameras`` rendered now (the geometry is in the scene): visibility for any view."""
    from .export import view_stems
    from .render import pass_render_settings, render_passes

    folder.mkdir(parents=True, exist_ok=True)
    out, stems = {}, view_stems(cameras)
    with pass_render_settings(scene, objects):
        for cam in cameras:
            files = render_passes(scene, cam, folder, stems[cam.name])
            out[cam.name] = folder / files["depth"]
    return out


def apply_as_texture(*args, **kwargs) -> ProjectionResult:
    """``apply_as_texture_steps`` in one call (scripts)."""
    return run_steps(apply_as_texture_steps(*args, **kwargs))


def apply_as_texture_steps(
    context,
    objects: Sequence[bpy.types.Object],
    cameras: Sequence[bpy.types.Object],
    job_folder: Path,
    size: int = 1024,
    shading: str = "EMISSION",
) -> Generator[tuple[int, int, str], None, ProjectionResult]:
    """Every view of a finished job (generated outputs and rendered inputs) projected onto ``objects``."""
    import json

    from .writeback import result_images

    job_folder = Path(job_folder)
    images = dict(result_images(job_folder))
    spec = json.loads((job_folder / "job.json").read_text(encoding="utf-8"))
    depths, poses = {}, {}
    for v in spec["views"]:
        if v.get("image") and v["name"] not in images:
            images[v["name"]] = job_folder / "inputs" / v["image"]
        if v.get("depth"):
            depths[v["name"]] = job_folder / "inputs" / v["depth"]
        poses[v["name"]] = (np.array(v["K"]), np.array(v["c2w"]), (v["width"], v["height"]))  # as the job saw them
    rig = [c for c in cameras if c.name in images]
    missing = [c for c in rig if c.name not in depths]
    if missing:
        from .export import scene_objects

        depths.update(view_depths(context.scene, missing, job_folder / "projection", scene_objects(context.scene)))
    return (yield from project_views_steps(context, objects, rig, images, depths, size, shading, job_folder.name, poses=poses))
