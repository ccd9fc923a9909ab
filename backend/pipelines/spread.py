"""Where a pass's independent SEVA windows run: here, in order (the default), or spread over other GPUs.

A pipeline describes each window of a pass whose windows do not depend on each other as a
self-contained *payload* (tensors and plain values, picklable) and hands the list to a ``Spread``
with the kind of window and the function that runs one payload here. The default runs them in
order; the Ray cluster (``backend.cluster``) sends some to other actors, which rebuild the models
from the job spec (``backend.tasks.windows``) and call the same window function, so a split job
gives the single-GPU result for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Payload = dict
RunHere = Callable[[Payload], dict]
# the kinds of window a Spread is handed (backend.tasks.windows runs each kind away from its job)
NOVEL_VIEW_WINDOW = "seva-novel-views"  # pipelines.novel_views.sample_window
EDIT_WINDOW = "seva-edit"  # pipelines.multiview_edit.edit_window


class Spread(Protocol):
    def __call__(self, kind: str, payloads: list[Payload], run_here: RunHere) -> list[dict]: ...


def in_order(kind: str, payloads: list[Payload], run_here: RunHere) -> list[dict]:
    """Every window here, one after the other."""
    return [run_here(p) for p in payloads]
