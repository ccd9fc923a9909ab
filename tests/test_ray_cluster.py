"""Jobs on a real local Ray cluster: a head and a second node process (``ray start``), CPU actors, the
job server over HTTP, the toy and tiny models. Jobs through Ray, a rig split over two actors equal to
the single run, an actor killed mid-job, cancel, the token, ray-batch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray is in requirements.txt; `make test` installs it")

from test_server import Server, free_port, spec, wait_for  # noqa: E402

from backend.jobs import JobFolder, parse_spec  # noqa: E402
from backend.runner import run_job  # noqa: E402
from backend.server.store import JobStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a second node on this machine, one CPU each (so one actor each).

    Each ``ray start --block`` runs in a process group of its own and is ended with it: ``ray stop``
    would end every Ray cluster of the machine, a developer's own too."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    common = ["--num-cpus", "1", "--object-store-memory", str(200 << 20), "--disable-usage-stats", "--block"]
    logs = tmp_path_factory.mktemp("ray")
    nodes: list[subprocess.Popen] = []

    def node(*args: str) -> None:
        out = (logs / f"node{len(nodes)}.log").open("wb")
        cmd = [RAY, "start", *args, *common]
        nodes.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        node("--head", "--port", str(port), "--include-dashboard=false")
        wait_for(lambda: _accepts(port), timeout=60, every=0.2)
        node("--address", address)
        wait_for(lambda: _alive_nodes(address) == 2, timeout=90, every=0.5)
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive_nodes(address: str) -> int:
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return int(r.stdout.strip() or 0) if r.returncode == 0 else 0


@pytest.fixture()
def ray_worker(cluster, tmp_path):
    from backend.cluster.dispatch import RayWorker

    made = []

    def make(retries: int = 1) -> tuple[RayWorker, JobStore]:
        store = JobStore(tmp_path / f"store{len(made)}")
        w = RayWorker(store, max_queue=8, address=cluster, actors=2, retries=retries)
        w.start([])
        made.append(w)
        return w, store

    yield make
    for w in made:
        w.stop()
    if ray.is_initialized():
        ray.shutdown()


def submit(store: JobStore, worker, spec_dict: dict, files: dict | None = None) -> str:
    job_id, tmp = store.incoming()
    inputs = store.upload_dir(tmp)
    inputs.mkdir(parents=True)
    for name, data in (files or {}).items():
        (inputs / name).write_bytes(data)
    store.commit(job_id, tmp, parse_spec(spec_dict))
    worker.enqueue(job_id)
    return job_id


def finished(store: JobStore, job_id: str, timeout: float = 300):
    wait_for(lambda: store.folder(job_id).result() is not None, timeout=timeout, every=0.2)
    return store.folder(job_id).result()


def toy_rig(task: str, n_views: int = 16) -> tuple[dict, dict]:
    """A toy scene seen by ``n_views`` cameras (two or more SEVA windows of 8), as a job spec + files."""
    from backend.toyworld.evaluate import job_views, make_scene

    views, files = job_views(make_scene(3, n_views=n_views))
    s = {"task": task, "views": views, "models": {"multiview": "seva-toy"}, "sampling": {"steps": 3, "seed": 4}}
    if task == "novel_views":
        for v in views[1:]:
            del v["image"]
        files = {"v0.png": files["v0.png"]}
    else:
        s["models"]["editor"] = "ic-light-toy"
        s["edit"] = {"prompt": "warm light from the left"}
    return s, files


@pytest.mark.parametrize("task", ["novel_views", "novel_views two-pass", "relight_text"])
def test_a_rig_split_over_two_actors_equals_the_single_run(ray_worker, tmp_path, task):
    s, files = toy_rig(task.split()[0])
    if task.endswith("two-pass"):  # anchors first on the job's own actor, then the windows in parallel
        s["multiview"] = {"passes": 2}
    worker, store = ray_worker()
    job_id = submit(store, worker, s, files)
    res = finished(store, job_id)
    assert res.status == "done", res.error
    log = [json.loads(line) for line in store.folder(job_id).log_path.read_text().splitlines()]
    assert any("1 more actor(s) share its windows" in e["message"] for e in log)
    assert sum(a["windows"] for a in worker.actors()) >= 1  # a helper really ran windows
    local = JobFolder.create(tmp_path / "local", parse_spec(s), files)
    assert run_here_single_threaded(local).status == "done"
    images = [o.path for o in res.outputs if o.kind == "image" and o.role in ("result", "reference_edit")]
    assert len(images) >= 15
    for rel in images:
        a = np.asarray(Image.open(store.folder(job_id).root / rel))
        b = np.asarray(Image.open(local.root / rel))
        assert np.array_equal(a, b), rel


def run_here_single_threaded(folder: JobFolder):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the actors run (one CPU each): other thread counts round differently
    try:
        return run_job(folder)
    finally:
        torch.set_num_threads(threads)


def test_a_job_that_arrives_takes_a_lent_actor_back_and_the_split_job_still_matches(ray_worker, tmp_path):
    s, files = toy_rig("novel_views", n_views=24)
    s["sampling"]["steps"] = 12
    worker, store = ray_worker()
    big = submit(store, worker, s, files)
    wait_for(lambda: any(a["lent_to"] == big for a in worker.actors()), timeout=60, every=0.1)
    small = submit(store, worker, spec(steps=2))
    res_small, res_big = finished(store, small), finished(store, big)
    assert res_small.status == res_big.status == "done", (res_small.error, res_big.error)
    assert res_small.started_at < res_big.finished_at  # it did not wait for the big job
    local = JobFolder.create(tmp_path / "local", parse_spec(s), files)
    assert run_here_single_threaded(local).status == "done"
    for o in res_big.outputs:
        if o.kind == "image" and o.role == "result":
            a = np.asarray(Image.open(store.folder(big).root / o.path))
            assert np.array_equal(a, np.asarray(Image.open(local.root / o.path))), o.path


def _actor_of(worker, job_id: str) -> int:
    return wait_for(lambda: next((a["pid"] for a in worker.actors() if a["job"] == job_id and a["alive"]), None), timeout=60)


def all_alive(worker) -> list[dict]:
    """The actors, once every lost one has been replaced."""

    def check():
        actors = worker.actors()
        return actors if all(a["alive"] for a in actors) else None

    return wait_for(check, timeout=60, every=0.2)


def _sampling(store: JobStore, job_id: str, after: int = 0) -> bool:
    events = store.folder(job_id).events()[after:]
    return any(e.stage == "sampling" for e in events)


def test_an_actor_killed_mid_job_is_retried_once_then_the_job_is_interrupted(ray_worker):
    worker, store = ray_worker(retries=1)
    job_id = submit(store, worker, spec(steps=150))
    wait_for(lambda: _sampling(store, job_id), timeout=120, every=0.1)
    first = _actor_of(worker, job_id)
    os.kill(first, signal.SIGKILL)
    res = finished(store, job_id)
    assert res.status == "done", res.error  # the retry ran to the end, on another actor
    events = store.folder(job_id).events()
    assert sum(e.stage == "done" for e in events) == 1 and events[-1].stage == "done"
    assert any("was lost mid-job; retrying on another actor" in e.message for e in events)
    assert first not in [a["pid"] for a in all_alive(worker)]  # the dead actor was replaced
    # lost again on its retry: interrupted, never done
    job2 = submit(store, worker, spec(steps=1000))
    for _ in range(2):
        n = len(store.folder(job2).events())
        wait_for(lambda n=n: _sampling(store, job2, n), timeout=120, every=0.1)
        os.kill(_actor_of(worker, job2), signal.SIGKILL)
    res2 = finished(store, job2)
    assert res2.status == "interrupted" and "lost mid-job (2 attempts)" in res2.error
    assert len(all_alive(worker)) == 2 and worker.alive


def test_jobs_over_http_through_ray_with_cancel_and_token(cluster, tmp_path):
    srv = Server(tmp_path / "jobs", token="s3cret-token-for-tests-only", extra=["--ray", cluster, "--ray-actors", "2"]).start()
    try:
        c = srv.client()
        assert c.check_version()["status"] == "ok"
        with pytest.raises(Exception, match="401|token"):
            srv.client(token=None).jobs()
        ids = [c.submit(spec(steps=3, seed=k)) for k in range(3)]
        long_id = c.submit(spec(steps=1000))
        for job_id in ids:
            assert c.wait(job_id)["status"] == "done"
        wait_for(lambda: (c.status(long_id)["progress"] or {}).get("stage") == "sampling", timeout=120)
        c.cancel(long_id)
        res = c.wait(long_id)
        assert res["status"] == "cancelled" and "cancelled before step" in res["error"]
        # bit for bit the in-process result
        remote = tmp_path / "remote"
        c.download(ids[1], remote)
        local = JobFolder.create(tmp_path / "local", parse_spec(spec(steps=3, seed=1)))
        assert run_job(local).status == "done"
        for rel in ("outputs/side_by_side.png",):
            assert np.array_equal(np.asarray(Image.open(remote / rel)), np.asarray(Image.open(local.root / rel)))
        for job_id in ids:  # every job's log says where it ran
            assert "on Ray actor pid" in (tmp_path / "jobs" / job_id / "log").read_text()
    finally:
        srv.stop()


def test_ray_batch_runs_a_folder_of_jobs_and_resumes(cluster, tmp_path):
    jobs = tmp_path / "batch"
    for k in range(3):
        JobFolder.create(jobs / f"object_{k}", parse_spec(spec(steps=2, seed=k)))
    (jobs / "notes").mkdir()  # not a job folder: ignored
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "backend", "ray-batch", str(jobs), "--ray", cluster, "--actors", "2"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "3 of 3 jobs to run" in r.stdout and "3/3 jobs" in r.stdout and "3 jobs in" in r.stdout and "3 done" in r.stdout
    for k in range(3):
        res = json.loads((jobs / f"object_{k}" / "result.json").read_text())
        assert res["status"] == "done" and (jobs / f"object_{k}" / "outputs/side_by_side.png").exists()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 of 3 jobs to run (3 finished before)" in again.stdout
    assert time.perf_counter() - t0 < 600


def test_a_cluster_that_is_not_there_is_one_clear_line(tmp_path):
    JobFolder.create(tmp_path / "jobs" / "a", parse_spec(spec(steps=2)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for address, says in ((f"127.0.0.1:{free_port()}", "nothing answers at"), ("nonsense", "give host:port")):
        cmd = [sys.executable, "-m", "backend", "ray-batch", str(tmp_path / "jobs"), "--ray", address]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and says in r.stderr and "ray start --head" in r.stderr and "Traceback" not in r.stderr, r.stderr
