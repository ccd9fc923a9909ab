"""torch.compile's artefacts kept on disk, so only the first process on a machine pays for compiling.

``torch.compile`` caches compiled graphs (and Triton autotuning) per process and in a local inductor
folder that is easily lost (``/tmp``). ``CompileCache`` saves what a process compiled as one file of
"mega-cache" artefacts (``torch.compiler.save_cache_artifacts``) under the user's cache folder and
loads it into the next process before anything is compiled, so a restarted server, another worker
or another machine with the same torch, GPU and shapes reuses it.

    cache = CompileCache("seva-1.1")       # <cache>/coupled_edit/compile/torch-<version>-<device>/seva-1.1.bin
    cache.load()                           # before the first compiled call
    ... run the compiled model ...
    cache.save()                           # after it
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_root() -> Path:
    """``COUPLED_EDIT_CACHE`` or ``XDG_CACHE_HOME``/``~/.cache``, then ``coupled_edit/compile``."""
    base = os.environ.get("COUPLED_EDIT_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coupled_edit" / "compile"


def device_tag() -> str:
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", f"torch-{torch.__version__}-{name}".lower()).strip("-")


class CompileCache:
    def __init__(self, name: str, root: Path | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(f"compile cache name {name!r}: use letters, digits, '.', '_' and '-'")
        self.path = (root or cache_root()) / device_tag() / f"{name}.bin"

    def load(self) -> int:
        """Loads the saved artefacts (none yet: 0); returns how many entries they hold."""
        import torch

        if not self.path.is_file():
            return 0
        try:
            info = torch.compiler.load_cache_artifacts(self.path.read_bytes())
        except Exception:  # noqa: BLE001 - a stale or broken file costs a compile, never the job
            return 0
        return sum(len(v) for v in info.artifacts.values()) if info is not None else 0

    def save(self) -> bool:
        """Writes what this process has compiled so far (atomically); False when there is nothing."""
        import torch

        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return False
        data, _ = saved
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(self.path)
        return True
