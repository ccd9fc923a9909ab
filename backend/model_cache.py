"""Models kept loaded between jobs (the server keeps them warm); imported by the runner and the tasks
alike, so neither imports the other."""

from __future__ import annotations

from collections.abc import Callable

from .pipelines.spread import in_order


class ModelCache:
    """Keeps loaded models between jobs (the server keeps them warm); ``clear()`` frees memory.

    Only the current job's models stay resident (VRAM is the scarce resource): loading a model
    drops those the current job has not used, so a job needing two (SEVA and an editor) keeps both.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, object] = {}
        self._used: set[tuple] = set()
        # where the independent SEVA windows of this worker's jobs run: here, in order, unless a
        # cluster actor lends its helpers (backend.pipelines.spread, backend.cluster)
        self.spread = in_order
        self._unsaved: list = []  # compile caches of models compiled here, saved once a job has run them

    def begin_job(self) -> None:
        self._used = set()

    def compiled(self, caches: list) -> None:
        """Compile caches (``backend.compile_cache``) to save after the job that first runs the models."""
        self._unsaved += caches

    def end_job(self) -> int:
        """Saves what this process compiled during the job (the next process loads it); returns the files written."""
        unique = {c.path: c for c in self._unsaved}.values()  # networks compiled in one mode share one file
        saved = sum(bool(c.save()) for c in unique)
        self._unsaved = []
        return saved

    def get(self, key: tuple, load: Callable[[], object]) -> object:
        if key not in self._models:
            stale = [k for k in self._models if k not in self._used]
            for k in stale:
                del self._models[k]
            if stale:
                self._free()
            self._models[key] = load()
        self._used.add(key)
        return self._models[key]

    def clear(self) -> None:
        self._models.clear()
        self._free()

    @staticmethod
    def _free() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
