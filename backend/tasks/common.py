"""What every task shares: progress reporting, output names, the metadata file."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..jobs import JobFolder, ProgressEvent
from ..sampling import StepInfo

ProgressFn = Callable[[ProgressEvent], None]
CancelFn = Callable[[], bool]


def slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


class Reporter:
    """Turns sampler steps into ProgressEvents (with ETA), logs them and forwards them."""

    def __init__(self, job: JobFolder, progress: ProgressFn | None) -> None:
        self.job, self.progress, self.t0 = job, progress, time.perf_counter()

    def emit(self, stage: str, step: int = 0, total: int = 0, message: str = "", eta: float | None = None) -> None:
        ev = ProgressEvent(
            job_id=self.job.job_id, stage=stage, step=step, total=total, message=message, elapsed_s=time.perf_counter() - self.t0, eta_s=eta
        )
        self.job.append_log(ev)
        if self.progress:
            self.progress(ev)

    def step(self, info: StepInfo) -> None:
        eta = info.elapsed_s / info.step * (info.total - info.step)
        self.emit("sampling", info.step, info.total, f"step {info.step}/{info.total}", eta)


def write_metadata(job: JobFolder, metadata: dict) -> None:
    Path(job.root / "outputs/metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
