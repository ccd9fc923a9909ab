"""The extension zip: built with Blender's own builder, validated, installed and enabled in a clean user folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")
ROOT = Path(__file__).resolve().parent.parent.parent


def tool(name: str) -> str:
    scripts = bpy.utils.system_resource("SCRIPTS")
    return {
        "ext": os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py"),
        "tags": os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py"),
    }[name]


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, tool("ext"), "build", "--source-dir", str(ROOT), "--output-dir", str(out), "--valid-tags", tool("tags")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    zips = list(out.glob("coupled_edit-*.zip"))
    assert len(zips) == 1
    return zips[0]


def test_zip_holds_the_extension_and_nothing_else(built_zip):
    names = zipfile.ZipFile(built_zip).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {"__init__.py", "blender_manifest.toml", "api.py", "backend", "scene_io", "operators", "panels"} <= tops
    assert not tops & {"tests", ".venv", "bench", "docs", ".pytest_cache", "Makefile", ".whl", "outputs", "train"}
    # the toy models ship with the extension: the add-on shows real pictures with no download
    assert {"backend/toy_models/seva-toy/model.safetensors", "backend/toy_models/vae-toy/config.json"} <= set(names)
    r = subprocess.run(
        [sys.executable, tool("ext"), "validate", str(built_zip), "--valid-tags", tool("tags")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_zip_installs_and_enables_in_a_clean_user_folder(built_zip, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["BLENDER_USER_RESOURCES"] = {str(tmp_path / "user")!r}
        import bpy
        r = bpy.ops.extensions.package_install_files(filepath={str(built_zip)!r}, repo="user_default", enable_on_install=True)
        assert r == {{"FINISHED"}}, r
        assert "bl_ext.user_default.coupled_edit" in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
        assert hasattr(bpy.ops.coupled_edit, "run") and hasattr(bpy.types, "VIEW3D_PT_coupled_edit")
        import bl_ext.user_default.coupled_edit.api as ce
        assert callable(ce.camera_matrices)
        print("INSTALLED-OK")
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "INSTALLED-OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_bundled_wheels_readme_names_the_preferences_default_backend(cycles_scene):
    """The README once said the server was the default while the preferences defaulted to In Blender."""
    from pathlib import Path

    prefs = bpy.context.preferences.addons["coupled_edit"].preferences
    prop = prefs.bl_rna.properties["backend"]
    label = next(item.name for item in prop.enum_items if item.identifier == prop.default)
    text = (Path(__file__).resolve().parents[2] / "bundled_wheels/README.md").read_text()
    assert f"The default backend (Add-on Preferences > Run Jobs) is **{label}**" in text
