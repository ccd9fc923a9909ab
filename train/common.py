"""What the toy-model training scripts share: arguments, a time budget, loss logs, packing results."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/toy_models", help="folder that receives <model>/ (and <model>.tar with --pack)")
    ap.add_argument("--minutes", type=float, default=5.0, help="training time budget (wall clock, data included)")
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pack", default="", help="also write the model folder as a .tar into this folder")
    ap.add_argument("--reuse", type=int, default=1, help="optimizer steps per rendered batch (fresh noise each time)")
    ap.add_argument("--cache", type=int, default=0, help="render this many samples once and train from them (CPU: rendering dominates)")
    ap.add_argument("--init", default="", help="start from this model folder (continue a previous run)")
    ap.add_argument("--note", default="", help="a line about this run for the model card (e.g. where its data came from)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network's training forward (the first steps compile)")
    return ap


def start(args, stream: int) -> torch.Generator:
    """Seed everything, let cuDNN pick kernels (shapes never change), and give this script's data generator."""
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True
    return torch.Generator().manual_seed(args.seed + stream)


def compiled(module: torch.nn.Module, args) -> torch.nn.Module:
    """What the training step calls: ``module`` through torch.compile with --compile (it shares the
    parameters; the module itself is what gets saved). The toy networks are small enough that kernel
    launches, not arithmetic, bound a step on an H200 (docs/performance.md)."""
    return torch.compile(module) if args.compile else module


def frozen_vae(path: str, device: str):
    """The trained toy VAE, fp32, no gradients (the editor and SEVA train in its latent space)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(path, torch_dtype=torch.float32).to(device).eval().requires_grad_(False)


class Budget:
    """Steps until the time budget or the step cap runs out; a cosine learning rate over the budget."""

    def __init__(self, minutes: float, max_steps: int, lr: float, warmup: int = 200) -> None:
        self.t0, self.seconds, self.max_steps, self.lr, self.warmup = time.perf_counter(), minutes * 60, max_steps, lr, warmup
        self.step = 0

    @property
    def fraction(self) -> float:
        return max((time.perf_counter() - self.t0) / self.seconds, self.step / self.max_steps)

    def next(self) -> bool:
        self.step += 1
        return self.fraction < 1.0

    def rate(self) -> float:
        warm = min(1.0, self.step / self.warmup)
        return self.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(self.fraction, 1.0))))


class LossLog:
    """Running mean of each loss, printed and kept every ``every`` steps (the model card's curve)."""

    def __init__(self, every: int = 100) -> None:
        self.every, self.sums, self.count, self.history = every, {}, 0, []
        self.t0 = time.perf_counter()

    def add(self, step: int, **losses: float) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        if step % self.every == 0:
            row = {
                "step": step,
                "s": round(time.perf_counter() - self.t0, 1),
                **{k: round(v / self.count, 5) for k, v in self.sums.items()},
            }
            self.history.append(row)
            print(json.dumps(row), flush=True)
            self.sums, self.count = {}, 0


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)


PART_KEYS = ("steps", "minutes", "device", "batch", "lr", "commit", "note")


def earlier_parts(init: str) -> list[dict]:
    """The training parts of the model a run continues from (its training.json), oldest first."""
    path = Path(init) / "training.json" if init else None
    if path is None or not path.is_file():
        return []
    prev = json.loads(path.read_text())
    parts = list(prev.get("earlier_parts", []))
    if "continued_from" in prev:  # session 4's one-level form
        parts.append({k: prev["continued_from"][k] for k in PART_KEYS if k in prev["continued_from"]})
    return parts + [{k: prev[k] for k in PART_KEYS if k in prev}]


def commit() -> str:
    """The scripts' commit; ``COUPLED_EDIT_COMMIT`` wins (a copied tree's git metadata can be stale)."""
    if os.environ.get("COUPLED_EDIT_COMMIT"):
        return os.environ["COUPLED_EDIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def save_card(folder: Path, title: str, body: dict, log: LossLog, budget: Budget, args) -> None:
    """model_card.md (people) + training.json (numbers) beside the weights; a continued run lists every part."""
    info = {
        "model": title,
        "label": "TOY model trained by Coupled Edit on its procedural toy world; not a real model",
        "steps": budget.step,
        "minutes": round((time.perf_counter() - budget.t0) / 60, 2),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "commit": commit(),
        **({"note": args.note} if args.note else {}),
        **body,
        "earlier_parts": earlier_parts(args.init),
        "loss_history": log.history,
    }
    info["total_steps"] = sum(p["steps"] for p in parts_of(info))
    (folder / "training.json").write_text(json.dumps(info, indent=1))
    write_card(folder, info)


def parts_of(info: dict) -> list[dict]:
    return info.get("earlier_parts", []) + [{k: info[k] for k in PART_KEYS if k in info}]


def write_card(folder: Path, info: dict) -> None:
    """model_card.md from training.json's fields."""
    parts = parts_of(info)
    last = info["loss_history"][-1] if info.get("loss_history") else {}
    lines = [
        f"# {info['model']} (TOY)",
        "",
        "Trained by Coupled Edit on its procedural toy world (`backend/toyworld`): random spheres, boxes, cylinders",
        "and tori, optionally on a ground disc, under a sun and an ambient term, rendered by the project's torch",
        "ray caster at 128x128 and composited on grey 127. It knows nothing else: on real photographs its",
        "output is meaningless. Made to give the pipeline real pictures and measurable quality without",
        "downloadable weights.",
        "",
        f"- Architecture: {info.get('architecture', '')}",
        f"- Data: {info.get('data', '')}",
        f"- Training: {sum(p['steps'] for p in parts)} steps in {len(parts)} part(s), script `train/{info.get('script', '')}`,"
        f" seed {info.get('seed', 0)}:",
        *[
            f"  - part {i}: {p['steps']} steps, batch {p['batch']}, AdamW lr {p['lr']} (cosine), {p['minutes']} min on {p['device']}"
            + (f", scripts of commit {p['commit']}" if p.get("commit") else "")
            + (f"; {p['note']}" if p.get("note") else "")
            for i, p in enumerate(parts, 1)
        ],
        f"- Final losses (last logged mean): {json.dumps({k: v for k, v in last.items() if k not in ('step', 's')})}",
        f"- Limits: {info.get('limits', '')}",
        "",
        "Loss history of the last part: `training.json`.",
    ]
    (folder / "model_card.md").write_text("\n".join(lines) + "\n")


def pack(folder: Path, dest: str) -> None:
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        with tarfile.open(Path(dest) / f"{folder.name}.tar", "w") as tar:
            tar.add(folder, arcname=folder.name)


def half_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """fp16 copies for the repository (loaders cast to the run's dtype)."""
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}
