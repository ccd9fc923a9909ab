"""torch.compile's artefacts saved by one process and reused by another (backend.compile_cache): the
second process, with an empty inductor folder of its own, finds its compiled graph in the saved file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, sys, torch
from torch._dynamo.utils import counters
from backend.compile_cache import CompileCache
cache = CompileCache("test-mlp")
loaded = cache.load()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
out = torch.compile(net)(torch.ones(2, 32))
saved = cache.save()
print(json.dumps({"loaded": loaded, "saved": saved, "hits": counters["inductor"]["fxgraph_cache_hit"],
                  "misses": counters["inductor"]["fxgraph_cache_miss"], "out": out.tolist(), "file": str(cache.path)}))
"""


def run(tmp_path: Path, inductor_dir: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COUPLED_EDIT_CACHE": str(tmp_path / "cache"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / inductor_dir)}  # fmt: skip
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_second_process_reuses_the_saved_compile(tmp_path):
    first = run(tmp_path, "inductor-a")
    assert first["loaded"] == 0 and first["saved"] and first["misses"] >= 1 and first["hits"] == 0
    assert Path(first["file"]).is_file() and "compile" in first["file"]
    second = run(tmp_path, "inductor-b")  # a fresh inductor folder: only the saved artefacts can hit
    assert second["loaded"] >= 1 and second["hits"] >= 1 and second["misses"] == 0
    assert second["out"] == first["out"]


def test_a_broken_file_costs_a_compile_not_the_run(tmp_path):
    from backend.compile_cache import CompileCache

    cache = CompileCache("broken", root=tmp_path)
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(b"not artefacts")
    assert cache.load() == 0
