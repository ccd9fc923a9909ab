"""One function per task: ``(spec, job, reporter, should_cancel, cache) -> (outputs, metadata)``.

``backend.runner.run_job`` picks the task's function from ``RUNNERS``; each module loads its
models through the runner's ModelCache and writes into the job folder.
"""

from __future__ import annotations

from . import edits, generate, views

RUNNERS = {
    "couple_images": generate.couple_images,
    "couple_videos": generate.couple_videos,
    "novel_views": views.novel_views,
    "relight_text": edits.relight_text,
    "stylize": edits.stylize,
    "relight_envmap": edits.relight_envmap,
    "spatial_edit": edits.spatial_edit,
}
