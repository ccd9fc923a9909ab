"""The backend's own Python environment, made without a terminal (Add-on Preferences > Set Up Backend).

Standard library only: it runs inside Blender's Python, which it never changes. A venv (or a uv
environment when uv is at hand) is created in a folder of the add-on's, torch is installed in the
build the machine can use (NVIDIA driver -> the newest CUDA build it supports; Apple -> the default
build with MPS; otherwise CPU), then ``environment.txt``. ``EnvSetup.step()`` advances by polling
the installer's output, so Blender stays responsive; ``cancel()`` stops it; the log is kept. A marker
file records what was installed, so an add-on update re-syncs only when the requirements change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("environment.txt")
MARKER = "coupled_edit_env.json"
TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
# (wheel tag, CUDA version, the lowest NVIDIA driver that runs it: Linux, Windows); newest first
CUDA_BUILDS = (("cu128", "12.8", 570.26, 570.65), ("cu126", "12.6", 560.28, 560.76), ("cu118", "11.8", 520.61, 520.06))


# the last phase: the environment imports, and says what it runs on (kept in the marker for the preflight)
CHECK = (
    "import json, torch, diffusers, fastapi, transformers\n"
    "c = torch.cuda.is_available(); p = torch.cuda.get_device_properties(0) if c else None\n"
    "print('versions', json.dumps({'torch': torch.__version__, 'cuda': c, 'diffusers': diffusers.__version__,"
    " 'device': p.name if p else 'CPU', 'vram_gb': p.total_memory / 2**30 if p else None}))"
)


class EnvSetupError(RuntimeError):
    """A setup step failed; the message names the step and ends with the log's tail."""


@dataclass(frozen=True)
class TorchChoice:
    key: str  # auto-detected or chosen: "cu128", "cu126", "cu118", "cpu", "default" (Apple: MPS)
    label: str  # what the preferences show
    requirement: str = "torch>=2.4"
    index_url: str | None = None


def torch_build(key: str, requirement: str = "torch>=2.4") -> TorchChoice:
    if key == "cpu":
        return TorchChoice("cpu", "CPU", requirement, TORCH_INDEX.format(tag="cpu"))
    if key == "default":
        return TorchChoice("default", "default build (Apple: Metal/MPS)", requirement, None)
    for tag, cuda, *_ in CUDA_BUILDS:
        if tag == key:
            return TorchChoice(tag, f"CUDA {cuda}", requirement, TORCH_INDEX.format(tag=tag))
    raise ValueError(f"unknown torch build {key!r}; choose one of cpu, default, {', '.join(t for t, *_ in CUDA_BUILDS)}")


@functools.lru_cache(maxsize=1)
def machine_gpu() -> tuple[float, str] | None:
    """``nvidia_gpu()`` asked once per process (the preferences redraw often)."""
    return nvidia_gpu()


def nvidia_gpu(run=subprocess.run) -> tuple[float, str] | None:
    """(driver version, GPU name) from nvidia-smi, or None without an NVIDIA driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = run([exe, "--query-gpu=driver_version,name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    m = re.match(r"\s*(\d+)\.(\d+)[^,]*,\s*(.+)", line)
    return (float(f"{m.group(1)}.{m.group(2)}"), m.group(3).strip()) if m else None


def detect_torch(system: str | None = None, gpu: tuple[float, str] | None | bool = True) -> TorchChoice:
    """The torch build for this machine (``gpu=True``: ask nvidia-smi), with the reason in its label."""
    system = system or platform.system()
    if gpu is True:
        gpu = machine_gpu()
    if system == "Darwin":
        return torch_build("default")
    if gpu:
        driver, name = gpu
        for tag, cuda, linux_min, windows_min in CUDA_BUILDS:
            if driver >= (windows_min if system == "Windows" else linux_min):
                choice = torch_build(tag)
                return TorchChoice(choice.key, f"CUDA {cuda} for {name} (driver {driver:g})", choice.requirement, choice.index_url)
        cpu = torch_build("cpu")
        return TorchChoice("cpu", f"CPU: driver {driver:g} of {name} is older than any CUDA build supports (update it)", cpu.requirement,
                           cpu.index_url)  # fmt: skip
    return torch_build("cpu")


def requirements_digest(torch: TorchChoice) -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + json.dumps(asdict(torch), sort_keys=True).encode()).hexdigest()[:16]


def env_python(root: Path) -> Path:
    venv = Path(root) / "venv"
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def env_status(root: Path, torch: TorchChoice | None = None) -> dict:
    """{"present": bool, "in_sync": bool, ...the marker}: what Check Backend and the preferences show."""
    marker = Path(root) / MARKER
    if not marker.is_file() or not env_python(root).exists():
        return {"present": False, "in_sync": False}
    info = json.loads(marker.read_text(encoding="utf-8"))
    digest = requirements_digest(TorchChoice(**info["torch"]) if torch is None else torch)
    return info | {"present": True, "in_sync": info.get("digest") == digest}


@dataclass
class Phase:
    name: str
    weight: float
    argv: list[str]


@dataclass
class EnvSetup:
    """Create or update the environment at ``root``; ``step()`` until it returns False (or ``run()``)."""

    root: Path
    torch: TorchChoice = field(default_factory=detect_torch)
    tool: str = "auto"  # "uv" (fast; installed privately with this Python's pip), "pip" (venv + pip), "auto"
    python: str = sys.executable
    extra_env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "setup.log"
        self.fraction, self.message, self.package, self.downloaded_mb = 0.0, "preparing", "", 0.0
        self._phases: list[Phase] | None = None
        self._done_weight, self._proc, self._lines = 0.0, None, queue.Queue()
        self._phase: Phase | None = None
        self._phase_lines = 0
        self.finished = False
        (self.root / MARKER).unlink(missing_ok=True)  # until it finishes, the environment is not ready
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n=== set up {time.strftime('%Y-%m-%d %H:%M:%S')}: torch {self.torch.label}, tool {self.tool}\n")

    # -- the plan ---------------------------------------------------------------------------------
    def plan(self) -> list[Phase]:
        py, venv = env_python(self.root), self.root / "venv"
        index = ["--index-url", self.torch.index_url] if self.torch.index_url else []
        uv = self._uv() if self.tool in ("uv", "auto") else None
        if uv is not None:
            install = [str(uv), "pip", "install", "--python", str(py)]
            create = [str(uv), "venv", "--python", self.python, str(venv)]
        else:
            install = [str(py), "-m", "pip", "install", "--progress-bar", "off"]
            create = [self.python, "-m", "venv", str(venv)]
        phases = [] if py.exists() else [Phase("creating the environment", 0.05, create)]
        return phases + [
            Phase(f"installing torch ({self.torch.label})", 0.45, [*install, self.torch.requirement, *index]),
            Phase("installing the backend's packages", 0.45, [*install, "-r", str(REQUIREMENTS)]),
            Phase("checking", 0.05, [str(py), "-c", CHECK]),
        ]  # fmt: skip

    def _uv(self) -> Path | None:
        """uv, from PATH or installed once into a private folder with this Python's pip; None: use venv + pip."""
        found = shutil.which("uv")
        if found:
            return Path(found)
        tools = self.root / "tools"
        exe = tools / "bin" / ("uv.exe" if os.name == "nt" else "uv")
        if not exe.exists():
            r = subprocess.run([self.python, "-m", "pip", "install", "--quiet", "--target", str(tools), "uv"], capture_output=True,
                               text=True, env=self._env())  # fmt: skip
            self._log(r.stdout + r.stderr)
            if r.returncode != 0 or not exe.exists():
                if self.tool == "uv":
                    raise EnvSetupError(f"could not install uv with {self.python} (see {self.log_path}); choose pip instead")
                return None
        return exe

    # -- stepping -----------------------------------------------------------------------------------
    def step(self) -> bool:
        """Advance (never blocks for long); True while work remains. Raises ``EnvSetupError`` on a failed step."""
        if self.finished:
            return False
        if self._phases is None:
            self._phases = self.plan()
        if self._proc is None:
            if not self._phases:
                self._finish()
                return False
            self._start(self._phases.pop(0))
            return True
        self._read()
        rc = self._proc.poll()
        if rc is None:
            return True
        self._read()
        if rc != 0:
            phase, self._proc = self._phase, None
            raise EnvSetupError(f"{phase.name} failed (exit code {rc}); log {self.log_path}:\n{self._tail()}")
        self._done_weight += self._phase.weight
        self.fraction, self._proc = self._done_weight, None
        return True

    def run(self, poll_s: float = 0.1) -> dict:
        while self.step():
            time.sleep(poll_s)
        return env_status(self.root, self.torch)

    def cancel(self) -> None:
        """Stop the running installer; the environment stays unmarked (Set Up again resumes it)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._log("=== cancelled\n")
        self.finished, self.message = True, "cancelled"

    # -- helpers --------------------------------------------------------------------------------------
    def _env(self) -> dict:
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # Blender's own must not leak into the new environment
            env.pop(k, None)
        return env

    def _start(self, phase: Phase) -> None:
        self._phase, self._phase_lines, self.message, self.package = phase, 0, phase.name, ""
        self._log(f"--- {phase.name}\n$ {' '.join(phase.argv)}\n")
        self._proc = subprocess.Popen(phase.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._env(),
                                      errors="replace")  # fmt: skip
        threading.Thread(target=self._pump, args=(self._proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._lines.put(line)

    def _read(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._log(line)
            self._phase_lines += 1
            self._parse(line.strip())
            # within a phase: creep toward its end as output arrives (installers do not say how much is left)
            within = 1.0 - 1.0 / (1.0 + self._phase_lines / 40.0)
            self.fraction = self._done_weight + self._phase.weight * min(within, 0.95)

    def _parse(self, line: str) -> None:
        m = re.match(r"(?:Collecting|Downloading|Using cached)\s+([A-Za-z0-9_.\-]+)", line)
        if m:
            self.package = m.group(1).split("-")[0]
        size = re.search(r"\(([\d.]+)\s*(kB|MB|GB|KiB|MiB|GiB)\)", line)
        if size:
            self.downloaded_mb += float(size.group(1)) * {"kB": 1e-3, "KiB": 1e-3, "MB": 1, "MiB": 1, "GB": 1e3, "GiB": 1e3}[size.group(2)]
        if line.startswith("versions "):
            self.versions = json.loads(line.split(" ", 1)[1])
        detail = f": {self.package}" if self.package else ""
        self.message = f"{self._phase.name}{detail} ({self.downloaded_mb:.0f} MB downloaded)"

    def _finish(self) -> None:
        marker = {"digest": requirements_digest(self.torch), "torch": asdict(self.torch), "python": self.python,
                  "versions": getattr(self, "versions", {}), "created": time.time()}  # fmt: skip
        (self.root / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        self.finished, self.fraction, self.message = True, 1.0, f"ready: torch {marker['versions'].get('torch', '?')}"
        self._log(f"=== ready {marker['versions']}\n")

    def _log(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(text)

    def _tail(self, n: int = 1500) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]


def remove_env(root: Path) -> bool:
    """Delete the environment folder (only one this module made: it must hold its log)."""
    root = Path(root)
    if not root.exists():
        return False
    if not (root / "setup.log").exists() and not (root / MARKER).exists():
        raise EnvSetupError(f"{root} was not made by Set Up Backend; not deleting it")
    shutil.rmtree(root)
    return True
