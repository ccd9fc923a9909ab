"""One SEVA window of a job, run away from the job (a cluster helper): the models are rebuilt from the
job spec exactly as the job's own task loads them, then the pipeline's window function runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..jobs import JobSpec
from ..pipelines.spread import EDIT_WINDOW, NOVEL_VIEW_WINDOW
from .edits import EDITOR_LOADERS
from .views import load_seva

if TYPE_CHECKING:
    from ..model_cache import ModelCache


class _Quiet:
    """A reporter for helpers: loading messages stay with the job's own log."""

    def emit(self, *args, **kwargs) -> None:
        pass


def run_window(kind: str, spec: JobSpec, payload: dict, cache: ModelCache, should_cancel=None) -> dict:
    """``kind``: what ``Spread`` was told (``NOVEL_VIEW_WINDOW`` or ``EDIT_WINDOW``)."""
    _, seva = load_seva(spec, _Quiet(), cache)
    if kind == NOVEL_VIEW_WINDOW:
        from ..pipelines.novel_views import sample_window

        return sample_window(seva, payload, None, should_cancel)
    if kind == EDIT_WINDOW:
        from ..pipelines.multiview_edit import edit_window

        _, editor = EDITOR_LOADERS[spec.task](spec, _Quiet(), cache)
        return edit_window(seva, editor, payload, None, should_cancel)
    raise ValueError(f"unknown window kind {kind!r}")
