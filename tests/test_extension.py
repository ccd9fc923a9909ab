"""The extension package: manifest passes Blender's validator, the add-on enables and registers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from validate_extension import validate  # noqa: E402

bpy = pytest.importorskip("bpy", reason="the bpy wheel is part of the test install (make test installs it)")


def test_manifest_passes_blenders_validator():
    r = validate(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout


def test_validator_rejects_a_broken_manifest(tmp_path):
    shutil.copy(ROOT / "blender_manifest.toml", tmp_path / "blender_manifest.toml")
    text = (tmp_path / "blender_manifest.toml").read_text().replace('id = "coupled_edit"', 'id = "coupled-edit"')
    (tmp_path / "blender_manifest.toml").write_text(text)
    r = validate(tmp_path)
    assert r.returncode != 0 and "not a valid python identifier" in (r.stdout + r.stderr).lower()


@pytest.fixture()
def addon(tmp_path):
    import addon_utils

    (tmp_path / "coupled_edit").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(tmp_path))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mod = addon_utils.enable("coupled_edit", default_set=True, handle_error=None)
    assert mod is not None
    yield mod
    addon_utils.disable("coupled_edit", default_set=True)
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == "coupled_edit" or m.startswith("coupled_edit.")]:
        del sys.modules[name]


def test_addon_enables_registers_and_disables(addon):
    assert "coupled_edit" in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons["coupled_edit"].preferences
    assert prefs.offline is False and prefs.model_cache == ""
    assert hasattr(bpy.types, "VIEW3D_PT_coupled_edit")
    assert bpy.types.VIEW3D_PT_coupled_edit.bl_category == "Coupled Edit"
    assert bpy.ops.coupled_edit.check_backend() == {"FINISHED"}


def test_backend_imports_as_a_subpackage_of_the_extension(addon):
    import importlib

    sub = importlib.import_module("coupled_edit.backend.jobs")
    assert sub.JobSpec.__module__ == "coupled_edit.backend.jobs"


def test_package_imports_where_bpy_is_missing():
    """pytest imports the repository root as a package; on a machine without bpy (the GPU machine) that
    import must not fail, or every test there errors at setup."""
    import subprocess

    code = (
        "import sys, importlib.util; sys.modules['bpy'] = None\n"  # None in sys.modules: 'import bpy' raises
        f"spec = importlib.util.spec_from_file_location('coupled_edit', {str(ROOT / '__init__.py')!r},"
        f" submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['coupled_edit'] = m; spec.loader.exec_module(m)\n"
        "print(m.bpy is None and not hasattr(m, '_modules'))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr[-2000:]
