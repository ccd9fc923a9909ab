"""Validate blender_manifest.toml with Blender's own extension validator (shipped in the bpy wheel)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def validator_paths() -> tuple[str, str]:
    import bpy

    scripts = bpy.utils.system_resource("SCRIPTS")
    cli = os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py")
    tags = os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py")
    return cli, tags


def validate(path: Path = ROOT) -> subprocess.CompletedProcess:
    cli, tags = validator_paths()
    return subprocess.run([sys.executable, cli, "validate", str(path), "--valid-tags", tags], capture_output=True, text=True)


if __name__ == "__main__":
    r = validate()
    print(r.stdout + r.stderr, end="")
    sys.exit(r.returncode)
