"""Write-back of per-view results as image strips: image datablocks, camera backgrounds, VSE strips.

Non-destructive: only new datablocks, new background-image entries and a new sequencer channel
are added; nothing the user made is changed or removed. Run from an operator with UNDO to make
it undoable in the GUI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bpy


@dataclass
class StripResult:
    images: dict[str, str] = field(default_factory=dict)  # camera name -> image datablock name
    backgrounds: list[str] = field(default_factory=list)  # cameras that got a background image
    channel: int | None = None  # sequencer channel holding the new strips
    files: dict[str, str] = field(default_factory=dict)  # camera name -> the file its strip shows (blend-relative when saved)
    notes: list[str] = field(default_factory=list)  # what changed beyond new data, for the operator to report


def result_images(job_folder: Path) -> dict[str, Path]:
    """View name -> result image file, from the job's result.json."""
    job_folder = Path(job_folder)
    path = job_folder / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"{job_folder} has no result.json: the job has not finished")
    result = json.loads(path.read_text(encoding="utf-8"))
    if result["status"] != "done":
        raise ValueError(f"the job ended as {result['status']!r}: {result.get('error') or 'no results to apply'}")
    # results only: a spatial edit also lists each view's coarse warp (role coarse_edit) under the same view
    return {
        o["view"]: job_folder / o["path"]
        for o in result["outputs"]
        if o.get("view") and o.get("kind") == "image" and o.get("role", "result") in ("result", "reference_edit")
    }


def apply_as_strips(
    scene: bpy.types.Scene,
    cameras: Sequence[bpy.types.Object],
    job_folder: Path,
    backgrounds: bool = True,
    sequencer: bool = True,
    pack: bool = True,
    label: str | None = None,
) -> StripResult:
    files = result_images(job_folder)
    label = label or Path(job_folder).name
    out = StripResult()
    by_name = {c.name: c for c in cameras}
    missing = [n for n in files if n not in by_name]
    if missing:
        raise ValueError(f"results for cameras not in the rig: {missing}; was the rig renamed since the job ran?")
    ordered = [c for c in cameras if c.name in files]
    for cam in ordered:
        img = bpy.data.images.load(str(files[cam.name]), check_existing=False)
        img.name = f"CE {label} {cam.name}"
        img.colorspace_settings.name = "sRGB"
        if pack:
            img.pack()  # the .blend keeps the result even if the job folder goes away
        out.images[cam.name] = img.name
        if backgrounds:
            data = cam.data
            data.show_background_images = True
            bg = data.background_images.new()
            bg.image = img
            bg.alpha = 1.0
            out.backgrounds.append(cam.name)
    if sequencer and ordered:
        se = scene.sequence_editor or scene.sequence_editor_create()
        strips, every = _strip_collections(se)
        out.channel = max((st.channel for st in every), default=0) + 1
        out.files = strip_files(files, label, out.notes)
        for frame, cam in enumerate(ordered, start=scene.frame_start):
            strip = strips.new_image(f"CE {label} {cam.name}", out.files[cam.name], out.channel, frame)
            strip.frame_final_duration = 1
        if scene.render.use_sequencer:  # with strips in it the sequencer would replace the 3D render on F12
            scene.render.use_sequencer = False
            out.notes.append(
                "Render Properties > Post Processing > Sequencer is now off, so F12 still renders the 3D scene; "
                "turn it on to render the strips"
            )
    return out


def _strip_collections(se):
    """(new strips go here, every strip) across API versions: ``strips`` from 4.4, ``sequences`` before."""
    strips = se.strips if hasattr(se, "strips") else se.sequences
    every = se.strips_all if hasattr(se, "strips_all") else getattr(se, "sequences_all", strips)
    return strips, every


def strip_files(files: dict[str, Path], label: str, notes: list[str]) -> dict[str, str]:
    """The result files copied next to the saved .blend (``//coupled_edit_results/<job>/``) and referenced
    relatively, so strips survive moving the project folder; an unsaved file keeps the job folder's paths."""
    import shutil

    if not bpy.data.filepath:
        notes.append("the .blend is not saved: strips point into the job folder; save, then apply again to keep them with the project")
        return {name: str(f) for name, f in files.items()}
    folder = Path(bpy.path.abspath("//")) / "coupled_edit_results" / bpy.path.clean_name(label)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, f in files.items():
        dest = folder / f.name
        shutil.copyfile(f, dest)
        out[name] = bpy.path.relpath(str(dest))
    return out
