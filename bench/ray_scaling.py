"""Ray scale-out (backend.cluster): a batch of coupled edits on 1 vs N actors, and one big rig split.

    python bench/ray_scaling.py --ray local --actors 1,2 --out ray_scaling.json              # GPUs, random weights at real shapes
    python bench/ray_scaling.py --ray auto --toy --views 8 --rig 24 --steps 3 --jobs 4        # CPU smoke run, toy models

1. batch: ``--jobs`` copies of a coupled relight job (IC-Light fc x SEVA, ``--views`` views of a toy-world
   turntable, ``--steps`` steps), submitted at once to a RayWorker with n actors: wall time, jobs/min.
   A warm-up job per actor loads the models first (not timed).
2. split: one novel_views job of ``--rig`` cameras (one input view) with n actors; with n > 1 the idle
   actors are lent as helpers and SEVA's windows run in parallel. Timed after a warm-up run.
Weights: ``bench/random_weights.py`` (the real loaders read them through models.paths), or the toy models.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend.jobs import parse_spec  # noqa: E402
from backend.server.store import JobStore  # noqa: E402
from backend.toyworld.evaluate import job_views, make_scene  # noqa: E402


def relight_spec(models: dict, views: list[dict], steps: int, window: int, size: int) -> dict:
    return {"task": "relight_text", "views": views, "models": models, "edit": {"prompt": "warm light from the left"},
            "sampling": {"steps": steps}, "multiview": {"window": window, "size": size}}  # fmt: skip


def novel_spec(models: dict, views: list[dict], steps: int, window: int, size: int) -> dict:
    targets = [{k: v for k, v in view.items() if k != "image"} for view in views[1:]]
    seva_only = {k: v for k, v in models.items() if k != "editor"}
    return {"task": "novel_views", "views": [views[0], *targets], "models": seva_only, "sampling": {"steps": steps},
            "multiview": {"window": window, "size": size}}  # fmt: skip


def submit(store: JobStore, worker, spec: dict, files: dict[str, bytes]) -> str:
    job_id, tmp = store.incoming()
    inputs = store.upload_dir(tmp)
    inputs.mkdir(parents=True)
    for name in {v["image"] for v in spec["views"] if v.get("image")}:
        (inputs / name).write_bytes(files[name])
    store.commit(job_id, tmp, parse_spec(spec))
    worker.enqueue(job_id, force=True)
    return job_id


def wait_all(store: JobStore, ids: list[str]) -> list[str]:
    while True:
        results = [store.folder(i).result() for i in ids]
        if all(r is not None for r in results):
            bad = [r.error for r in results if r.status != "done"]
            if bad:
                raise RuntimeError(f"{len(bad)} job(s) did not end done: {bad[0]}")
            return [r.status for r in results]
        time.sleep(0.2)


def main() -> None:
    from backend.cluster.dispatch import RayWorker

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ray", default="auto")
    ap.add_argument("--actors", default="1,2", help="actor counts to compare")
    ap.add_argument("--toy", action="store_true", help="the toy models (CPU smoke run) instead of random weights at real shapes")
    ap.add_argument("--weights", default="/tmp/coupled_edit_random_weights")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--rig", type=int, default=60)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.toy:
        models, size, window = {"multiview": "seva-toy", "editor": "ic-light-toy"}, 128, 8
    else:
        from random_weights import write_random_weights

        models, size, window = write_random_weights(Path(a.weights)), 576, 21
    views, files = job_views(make_scene(3, n_views=max(a.views, a.rig), size=size))
    relight = relight_spec(models, views[: a.views], a.steps, window, size)
    rig = novel_spec(models, views[: a.rig], a.steps, window, size)
    rows = []
    for n in [int(x) for x in a.actors.split(",")]:
        store = JobStore(tempfile.mkdtemp(prefix="ray-bench-"))
        worker = RayWorker(store, max_queue=a.jobs + n + 2, address=a.ray, actors=n)
        worker.start([])
        try:
            wait_all(store, [submit(store, worker, dict(relight, sampling={"steps": 2}), files) for _ in range(n)])  # load models
            t0 = time.perf_counter()
            wait_all(store, [submit(store, worker, relight, files) for _ in range(a.jobs)])
            batch_s = time.perf_counter() - t0
            wait_all(store, [submit(store, worker, dict(rig, sampling={"steps": 2}), files)])  # warm the rig's shapes
            t0 = time.perf_counter()
            wait_all(store, [submit(store, worker, rig, files)])
            rig_s = time.perf_counter() - t0
            helpers = sum(s["windows"] for s in worker.actors())
        finally:
            worker.stop()
        rows.append({"actors": n, "batch_jobs": a.jobs, "batch_s": round(batch_s, 2), "jobs_per_min": round(60 * a.jobs / batch_s, 2),
                     "rig_cameras": a.rig, "rig_s": round(rig_s, 2), "windows_on_helpers": helpers})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["batch_speedup"] = round(base["batch_s"] / r["batch_s"], 2)
        r["rig_speedup"] = round(base["rig_s"] / r["rig_s"], 2)
    res = {"settings": vars(a) | {"size": size, "window": window, "models": models.get("multiview")}, "rows": rows}
    print(f"| actors | batch of {a.jobs}: s | jobs/min | speed-up | rig of {a.rig}: s | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['actors']} | {r['batch_s']} | {r['jobs_per_min']} | {r['batch_speedup']}x | {r['rig_s']} | {r['rig_speedup']}x |")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
