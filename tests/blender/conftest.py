"""Blender tests run in the pytest process with the bpy wheel; the add-on is enabled as ``coupled_edit``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


@pytest.fixture(scope="session")
def addon(tmp_path_factory):
    """The checkout linked as ``coupled_edit`` and enabled the way Blender enables add-ons."""
    import addon_utils

    link_dir = tmp_path_factory.mktemp("addon")
    (link_dir / "coupled_edit").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(link_dir))
    mod = addon_utils.enable("coupled_edit", default_set=True, handle_error=None)
    assert mod is not None
    yield mod
    if "coupled_edit" in bpy.context.preferences.addons:
        addon_utils.disable("coupled_edit", default_set=True)
    sys.path.remove(str(link_dir))


@pytest.fixture()
def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    yield scene


@pytest.fixture()
def cycles_scene(addon):
    """A factory-fresh scene with the add-on enabled again (factory settings disable add-ons),
    Cycles at 2 samples, no denoising, 64² renders; the add-on is disabled afterwards."""
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("coupled_edit", default_set=True, handle_error=None)
    # jobs run in this process unless a test sets up a backend environment or a server
    bpy.context.preferences.addons["coupled_edit"].preferences.backend = "IN_PROCESS"
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 2
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 64
    yield scene
    if "coupled_edit" in bpy.context.preferences.addons:
        addon_utils.disable("coupled_edit", default_set=True)
