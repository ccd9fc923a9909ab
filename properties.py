"""Scene settings of the N-panel (``scene.coupled_edit``); every property has a tooltip."""

import bpy

TASKS = [
    (
        "relight_text",
        "Relight (IC-Light × SEVA)",
        "Relight every view from a prompt; IC-Light coupled with Stable Virtual Camera keeps the views consistent",
    ),
    (
        "stylize",
        "Stylize (ControlNet × SEVA)",
        "Restyle every view from a prompt; ControlNet keeps each view's exact geometry, SEVA keeps the views consistent",
    ),
    (
        "relight_envmap",
        "Relight with HDRI (Neural Gaffer × SEVA)",
        "Relight every view under the World's environment map (or an .hdr/.exr file), consistently across the rig",
    ),
    (
        "spatial_edit",
        "Move Objects (Magic Fixup × SEVA)",
        "Capture the rig, move, duplicate or delete objects, and get every captured view back photorealistic and consistent",
    ),
    ("novel_views", "Fill Views (SEVA)", "Generate every other rig view from the reference view with Stable Virtual Camera"),
]
EDITORS = [
    ("ic-light-fc", "IC-Light fc", "IC-Light foreground-conditioned (lllyasviel/ic-light on Realistic Vision 5.1)"),
    (
        "ic-light-toy",
        "Toy (trained here)",
        "TOY editor trained by Coupled Edit on its procedural world: prompts '<colour> light from the "
        "<direction>' only, 128 px; real pictures of toy scenes without any download",
    ),
    ("ic-light-tiny", "Tiny (test)", "Tiny random IC-Light: checks the whole chain in seconds, output is noise"),
]
STYLE_BASES = [
    ("sd15", "Stable Diffusion 1.5", "stable-diffusion-v1-5 with ControlNet 1.1 (OpenRAIL licences)"),
    ("sd-tiny", "Tiny (test)", "Tiny random SD + ControlNet: checks the whole chain in seconds, output is noise"),
]
CONTROLS = [
    ("depth", "Depth", "Keep the views' exact depth: layout holds, textures restyle freely"),
    ("normal", "Normals", "Keep the exact surface orientation: finer shape detail than depth"),
    ("lineart", "Line Art", "Keep lines drawn from the geometry: silhouettes, depth jumps, creases"),
    ("canny", "Edges", "Keep the edges of the current render (Canny): textures and details stay"),
    ("tile", "Tile", "Keep the colours and details of the current render; the prompt shifts the style"),
]
GAFFERS = [
    ("neural-gaffer", "Neural Gaffer", "coast01/Neural_Gaffer on zero123-xl (MIT licence)"),
    ("neural-gaffer-tiny", "Tiny (test)", "Tiny random Neural Gaffer: checks the whole chain in seconds, output is noise"),
]
FIXUPS = [
    ("magicfixup", "Magic Fixup", "HadiZayer/MagicFixup (Adobe Research License: non-commercial research only)"),
    ("magicfixup-tiny", "Tiny (test)", "Tiny random Magic Fixup: checks the whole chain in seconds, output is noise"),
]
MODELS = [
    ("seva-1.1", "SEVA 1.1", "stabilityai/stable-virtual-camera v1.1 (gated; non-commercial licence)"),
    ("seva-1.0", "SEVA 1.0", "stabilityai/stable-virtual-camera v1.0"),
    ("seva-toy", "Toy (trained here)", "TOY SEVA trained by Coupled Edit on its procedural world: windows of 8 views at 128 px"),
    ("seva-tiny", "Tiny (test)", "Tiny random model: checks the whole chain in seconds, output is noise"),
]


class CoupledEditSettings(bpy.types.PropertyGroup):
    rig_source: bpy.props.EnumProperty(
        name="Rig",
        description="Which cameras form the rig",
        items=[
            ("COLLECTION", "Collection", "The cameras of a collection, ordered by name"),
            ("SELECTED", "Selected", "The selected cameras, ordered by name"),
        ],
        default="COLLECTION",
    )
    rig_collection: bpy.props.PointerProperty(
        name="Collection", type=bpy.types.Collection, description="Collection holding the rig's cameras"
    )
    use_photos: bpy.props.BoolProperty(
        name="Use Camera Photos",
        default=False,
        description="Inputs are the photos attached to the cameras as background images (capture rigs); cameras without one are generated",
    )
    turntable_count: bpy.props.IntProperty(name="Cameras", default=8, min=1, max=256, description="Cameras per ring of a new turntable")
    turntable_elevation: bpy.props.FloatProperty(
        name="Elevation",
        default=0.349066,
        min=-1.5,
        max=1.5,
        subtype="ANGLE",
        description="Height of the turntable ring as an angle above the horizon",
    )
    turntable_lens: bpy.props.FloatProperty(
        name="Lens", default=50.0, min=1.0, max=500.0, unit="CAMERA", description="Focal length of the new cameras"
    )
    task: bpy.props.EnumProperty(name="Task", items=TASKS, description="What to do with the rig")
    model: bpy.props.EnumProperty(name="Model", items=MODELS, description="Multi-view model weights")
    editor: bpy.props.EnumProperty(name="Editor", items=EDITORS, description="2D editing model coupled with the multi-view model")
    prompt: bpy.props.StringProperty(
        name="Prompt", default="beach sunset lighting", description="The lighting (Relight) or the style (Stylize) to give every view"
    )
    gaffer: bpy.props.EnumProperty(name="Relighter", items=GAFFERS, description="Model that relights each view from the environment map")
    envmap_source: bpy.props.EnumProperty(
        name="Lighting",
        items=[
            ("WORLD", "World", "The scene World's Environment Texture, with its Mapping rotation and strength"),
            ("FILE", "File", "An equirectangular .hdr or .exr file"),
        ],
        default="WORLD",
        description="Where the environment map comes from",
    )
    envmap_file: bpy.props.StringProperty(name="HDRI", subtype="FILE_PATH", description="Equirectangular .hdr or .exr (Blender's layout)")
    envmap_rotation: bpy.props.FloatProperty(
        name="Rotation", default=0.0, subtype="ANGLE", description="Turn the environment about the world's Z axis (file only)"
    )
    envmap_strength: bpy.props.FloatProperty(name="Strength", default=1.0, min=0.0, description="Multiplies the map (file only)")
    spin: bpy.props.FloatProperty(
        name="Spin", default=0.0, subtype="ANGLE", description="Extra turn of the lighting about Z, on top of the World's own"
    )
    composite: bpy.props.EnumProperty(
        name="Behind",
        items=[
            ("envmap", "Environment", "Each camera's view of the environment behind the object"),
            ("transparent", "Transparent", "Nothing: the result keeps the render's alpha"),
        ],
        description="What shows behind the relit object",
    )
    fixup: bpy.props.EnumProperty(name="Fixer", items=FIXUPS, description="Model that makes the moved objects look real in every view")
    capture_dir: bpy.props.StringProperty(
        name="Capture", subtype="DIR_PATH", description="Folder of the last Capture Before (views, depth, object index, object matrices)"
    )
    only_selected: bpy.props.BoolProperty(
        name="Selected Objects Only", default=False, description="Propagate the changes of the selected objects only"
    )
    style_base: bpy.props.EnumProperty(name="Style Model", items=STYLE_BASES, description="Image model that restyles each view")
    control: bpy.props.EnumProperty(name="Keep", items=CONTROLS, description="What each view keeps while its style changes")
    style_strength: bpy.props.FloatProperty(
        name="Change",
        default=0.75,
        min=0.05,
        max=1.0,
        subtype="FACTOR",
        description="How much of each view is redrawn (1: from scratch, low: close to the render)",
    )
    strength: bpy.props.FloatProperty(
        name="Coupling",
        default=0.015,
        min=0.0,
        max=10.0,
        precision=3,
        description="How strongly each view follows its 2D edit (0: multi-view model alone)",
    )
    steps: bpy.props.IntProperty(name="Steps", default=50, min=1, max=1000, description="Denoising steps (more: slower, finer)")
    guidance: bpy.props.FloatProperty(
        name="Guidance", default=2.0, min=0.0, max=20.0, description="Classifier-free guidance scale of the multi-view model"
    )
    seed: bpy.props.IntProperty(name="Seed", default=23, min=0, description="Random seed; the same seed gives the same result")
    working_size: bpy.props.IntProperty(
        name="Working Size", default=576, min=64, max=2048, step=64, description="Short side the model works at (pixels)"
    )
    output_dir: bpy.props.StringProperty(
        name="Jobs Folder",
        default="//coupled_edit",
        subtype="DIR_PATH",
        description="Where job folders (inputs, outputs, logs) are written",
    )
    last_job: bpy.props.StringProperty(name="Last Job", default="", subtype="DIR_PATH", description="Folder of the last finished job")


def register() -> None:
    bpy.utils.register_class(CoupledEditSettings)
    bpy.types.Scene.coupled_edit = bpy.props.PointerProperty(type=CoupledEditSettings)


def unregister() -> None:
    del bpy.types.Scene.coupled_edit
    bpy.utils.unregister_class(CoupledEditSettings)
