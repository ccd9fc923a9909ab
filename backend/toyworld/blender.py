"""The toy world in Blender: the same primitives, materials and lights, for Cycles (bpy only).

Cycles with no indirect bounces gives exactly the torch renderer's shading: a Diffuse BSDF of
the albedo lit by a sun of angle 0 (hard shadows) with strength pi * colour, plus an Emission of
albedo * ambient for the ambient term, on a black world. Meshes are fine (64-96 segments, smooth
shading) so silhouettes and normals match the analytic shapes to a fraction of a pixel at 128 px.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .scene import BOX, CYLINDER, GROUND_RADIUS, SPHERE, TORUS, Lights, Scenes

COLLECTION = "Toy World"


def _material(name: str, albedo, ambient) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    diffuse = nt.nodes.new("ShaderNodeBsdfDiffuse")
    diffuse.inputs["Color"].default_value = (*albedo, 1.0)
    emit = nt.nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*(a * b for a, b in zip(albedo, ambient, strict=True)), 1.0)
    emit.inputs["Strength"].default_value = 1.0
    add = nt.nodes.new("ShaderNodeAddShader")
    nt.links.new(diffuse.outputs[0], add.inputs[0])
    nt.links.new(emit.outputs[0], add.inputs[1])
    nt.links.new(add.outputs[0], out.inputs["Surface"])
    mat.diffuse_color = (*albedo, 1.0)  # what solid view shows
    # the ambient emission must not light other surfaces (Cycles would sample it as a mesh light)
    mat.cycles.emission_sampling = "NONE"
    return mat


def _smooth(obj: bpy.types.Object, keep_flat_caps: bool = False) -> None:
    for poly in obj.data.polygons:
        poly.use_smooth = not (keep_flat_caps and abs(poly.normal.z) > 0.999)


def build(scenes: Scenes, b: int, light: Lights, context=None) -> list[bpy.types.Object]:
    """Add scene ``b`` (and a sun for ``light`` entry 0) to the current Blender scene, in collection "Toy World".

    Returns the primitive objects (not the ground or the sun), named after their kind.
    """
    ctx = context or bpy.context
    scene = ctx.scene
    coll = bpy.data.collections.new(COLLECTION)
    scene.collection.children.link(coll)
    ambient = [float(x) for x in light.ambient[0]]
    objects = []
    for p in range(scenes.kind.shape[1]):
        kind = int(scenes.kind[b, p])
        size = [float(x) for x in scenes.size[b, p]]
        if kind == SPHERE:
            mesh = _mesh_from_op(lambda s=size: bpy.ops.mesh.primitive_uv_sphere_add(segments=96, ring_count=48, radius=s[0]))
            name, flat = "Sphere", False
        elif kind == BOX:
            mesh = _mesh_from_op(lambda: bpy.ops.mesh.primitive_cube_add(size=2.0))
            mesh.transform(Matrix.Diagonal((*size, 1.0)))
            name, flat = "Box", None
        elif kind == CYLINDER:
            mesh = _mesh_from_op(lambda s=size: bpy.ops.mesh.primitive_cylinder_add(vertices=96, radius=s[0], depth=2 * s[1]))
            name, flat = "Cylinder", True
        elif kind == TORUS:
            mesh = _mesh_from_op(
                lambda s=size: bpy.ops.mesh.primitive_torus_add(major_radius=s[0], minor_radius=s[1], major_segments=96, minor_segments=48)
            )
            name, flat = "Torus", False
        else:
            continue
        obj = bpy.data.objects.new(f"{name}.{p}", mesh)
        coll.objects.link(obj)
        if flat is not None:
            _smooth(obj, keep_flat_caps=flat)
        rot = np.asarray(scenes.rot[b, p], dtype=np.float64)
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = rot, np.asarray(scenes.centre[b, p], dtype=np.float64)
        obj.matrix_world = Matrix(m.tolist())
        obj.data.materials.append(_material(obj.name, [float(x) for x in scenes.albedo[b, p]], ambient))
        objects.append(obj)
    if bool(scenes.ground[b]):
        mesh = _mesh_from_op(lambda: bpy.ops.mesh.primitive_circle_add(vertices=256, radius=GROUND_RADIUS, fill_type="NGON"))
        ground = bpy.data.objects.new("Ground", mesh)
        coll.objects.link(ground)
        ground.data.materials.append(_material("Ground", [float(x) for x in scenes.ground_albedo[b]], ambient))
    set_sun(light, scene, coll)
    scene.world = black_world()
    return objects


def black_world() -> bpy.types.World:
    """A world that adds no light (Blender 5 worlds have a node tree whose Background is grey by default)."""
    world = bpy.data.worlds.new("Toy World (black)")
    world.color = (0.0, 0.0, 0.0)
    if world.node_tree is None and hasattr(world, "use_nodes"):
        world.use_nodes = True
    for node in world.node_tree.nodes if world.node_tree else ():
        if node.type == "BACKGROUND":
            node.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
            node.inputs["Strength"].default_value = 0.0
    return world


def _mesh_from_op(op) -> bpy.types.Mesh:
    """Run a primitive operator and keep only its mesh (the operator's object is removed)."""
    op()
    obj = bpy.context.active_object
    mesh = obj.data
    bpy.data.objects.remove(obj)
    return mesh


def set_sun(light: Lights, scene=None, collection=None, name: str = "Toy Sun") -> bpy.types.Object:
    """Create or update the sun for ``light`` entry 0 (direction towards the light, colour, strength pi * colour)."""
    scene = scene or bpy.context.scene
    sun = bpy.data.objects.get(name)
    if sun is None:
        data = bpy.data.lights.new(name, "SUN")
        sun = bpy.data.objects.new(name, data)
        (collection or scene.collection).objects.link(sun)
    colour = [float(x) for x in light.colour[0]]
    peak = max(colour) or 1.0
    sun.data.color = [c / peak for c in colour]
    sun.data.energy = math.pi * peak  # irradiance pi * c: a diffuse face turned to it shows albedo * c
    sun.data.angle = 0.0
    # a sun shines along its local -Z: local +Z points towards the light
    sun.rotation_euler = Vector([float(x) for x in light.direction[0]]).to_track_quat("Z", "Y").to_euler()
    sun.location = Vector([float(x) for x in light.direction[0]]) * 6.0
    return sun


def cycles_direct_light(scene, size: int, samples: int = 64) -> None:
    """Cycles on the CPU, direct light only (what the torch renderer computes), transparent film, Standard view."""
    scene.render.engine = "CYCLES"
    c = scene.cycles
    c.device, c.samples, c.use_denoising = "CPU", samples, False
    c.max_bounces = 0
    c.pixel_filter_type, c.filter_width = "BOX", 1.0
    c.use_adaptive_sampling = False
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0


def camera_from_opencv(name: str, c2w: np.ndarray, fov_deg: float, scene=None) -> bpy.types.Object:
    """A Blender camera with an OpenCV c2w and a horizontal field of view (principal point centred)."""
    scene = scene or bpy.context.scene
    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    scene.collection.objects.link(cam)
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.angle = math.radians(fov_deg)
    cam.matrix_world = Matrix((np.asarray(c2w, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist())
    return cam
