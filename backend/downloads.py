"""Model downloads with progress for people, not terminals: ``python -m backend models download KEY``
prints one JSON line per update (bytes, rate, ETA). A cancelled download keeps every file that
completed in the hub cache; the file in flight starts over (huggingface_hub 2.x keeps no partial files).

Files come through ``huggingface_hub`` (cache, resume, ``HF_TOKEN``, ``HF_ENDPOINT`` as usual). A
registry entry naming one file downloads that file; a pipeline or model folder downloads its
configs, tokenizer files and safetensors weights, without the fp16/EMA/pickle duplicates that many
repos also hold. Progress is read from the cache's growing blobs by a watcher thread, so it works
whatever progress bar the hub library draws.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .registry import MODELS, ModelEntry, entry

KEEP = ("*.json", "*.txt", "*.model", "*.safetensors")
SKIP = ("*.fp16.*", "*fp16*", "*ema*", "*.ckpt", "*.bin", "*.pt", "*.pth", "*.onnx*", "*.msgpack", "*.h5", "*.gguf")


class DownloadError(RuntimeError):
    """A download that cannot go on; the message says what to do."""


def plan(e: ModelEntry, token: str | None = None) -> list[tuple[str, int]]:
    """(file, bytes) the model needs, from the hub's file list."""
    from huggingface_hub import HfApi

    with _hub_errors(e):
        info = HfApi().model_info(e.repo, revision=e.revision, files_metadata=True, token=token)
    files = [(s.rfilename, int(s.size or 0)) for s in info.siblings or []]
    if e.filename:
        wanted = [f for f in files if f[0] == e.filename]
        if not wanted:
            raise DownloadError(f"file {e.filename!r} is not in repo {e.repo}: the registry names the wrong file")
        return wanted
    prefix = f"{e.subfolder}/" if e.subfolder else ""
    return [(n, size) for n, size in files if n.startswith(prefix) and any(fnmatch.fnmatch(n, p) for p in KEEP)
            and not any(fnmatch.fnmatch(n, p) for p in SKIP)]  # fmt: skip


def download(key: str, emit: Callable[[dict], None] = lambda ev: None, token: str | None = None, every_s: float = 0.5) -> Path:
    """Every file of registry model ``key`` into the hub cache; ``emit`` gets plan/progress/done events."""
    from huggingface_hub import constants, hf_hub_download

    e = entry(key)
    if e.repo is None:
        raise DownloadError(f"{key!r} is a tiny random model: nothing to download")
    if constants.HF_HUB_OFFLINE:
        raise DownloadError("the hub is switched off (Offline in the add-on preferences, or HF_HUB_OFFLINE=1); switch it on to download")
    files = plan(e, token)
    total = sum(size for _, size in files)
    emit({"event": "plan", "key": key, "repo": e.repo, "files": len(files), "total": total, "gated": e.gated, "licence": e.licence})
    repo_dir = Path(constants.HF_HUB_CACHE) / f"models--{e.repo.replace('/', '--')}"
    before = _blob_bytes(repo_dir)
    done = threading.Event()
    t0 = time.monotonic()

    def watch() -> None:
        while not done.wait(every_s):
            have = min(total, _blob_bytes(repo_dir) - before)
            rate = have / max(time.monotonic() - t0, 1e-6)
            eta = (total - have) / rate if rate > 0 else None
            emit({"event": "progress", "key": key, "bytes": have, "total": total, "rate": rate, "eta_s": eta})

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        path = None
        for name, _ in files:
            with _hub_errors(e, name):
                path = hf_hub_download(e.repo, name, revision=e.revision, token=token)
    finally:
        done.set()
        watcher.join()
    root = Path(path).parents[len(Path(files[-1][0]).parts) - 1] if path else repo_dir
    emit({"event": "done", "key": key, "bytes": total, "total": total, "seconds": time.monotonic() - t0, "path": str(root)})
    return root


def _blob_bytes(repo_dir: Path) -> int:
    blobs = repo_dir / "blobs"
    try:
        return sum(f.stat().st_size for f in blobs.iterdir() if f.is_file())
    except OSError:
        return 0


class _hub_errors:
    """Hub errors as one message that says what to do (gated: the licence page)."""

    def __init__(self, e: ModelEntry, filename: str | None = None) -> None:
        self.e, self.filename = e, filename

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, Exception):
            return False
        name, e = type(exc).__name__, self.e
        status = getattr(getattr(exc, "response", None), "status_code", None)  # not the text: it holds URLs with ports
        if name == "GatedRepoError" or (status in (401, 403) and name != "RepositoryNotFoundError"):
            raise DownloadError(
                f"{e.repo} is gated: accept its licence at https://huggingface.co/{e.repo} with your account, then give your "
                "access token (Add-on Preferences > Hugging Face Token)"
            ) from None
        if name == "RepositoryNotFoundError":
            raise DownloadError(f"{e.repo} was not found on the hub (check the registry entry)") from None
        if name == "EntryNotFoundError":
            raise DownloadError(f"file {self.filename!r} is not in repo {e.repo}") from None
        if isinstance(exc, OSError) or "Connect" in name or "Timeout" in name:
            raise DownloadError(f"could not reach the hub for {e.repo}: {exc}; check the network and try again (it resumes)") from None
        return False


def main(keys: list[str]) -> int:
    """The CLI: JSON lines on stdout; exit 1 with an "error" event when a download cannot go on."""

    def emit(ev: dict) -> None:
        print(json.dumps(ev), flush=True)

    token = os.environ.get("HF_TOKEN") or None
    for key in keys:
        if key not in MODELS:
            emit({"event": "error", "key": key, "message": f"unknown model {key!r}; known: {', '.join(sorted(MODELS))}"})
            return 1
        try:
            download(key, emit, token)
        except DownloadError as e:
            emit({"event": "error", "key": key, "message": str(e)})
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - the CLI goes through backend.cli
    sys.exit(main(sys.argv[1:]))


def sizes(keys: list[str], token: str | None = None) -> dict[str, int | str]:
    """Bytes each model would download (from the hub's file list), or why it could not be asked."""
    out: dict[str, int | str] = {}
    for key in keys:
        e = MODELS.get(key)
        if e is None or e.repo is None:
            out[key] = "not a downloadable model"
            continue
        try:
            out[key] = sum(size for _, size in plan(e, token))
        except DownloadError as err:
            out[key] = str(err)
    return out
