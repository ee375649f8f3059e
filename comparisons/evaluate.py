"""Batch evaluation over a dataset file, resumable, sharded over ranks of an existing launcher.

    python -m comparisons evaluate DATASET.jsonl --methods "StreamDiffusion,StreamV2V" --out-dir DIR
    torchrun --nproc_per_node 2 -m comparisons evaluate DATASET.jsonl ...     # same code, 2 ranks

DATASET.jsonl: one JSON object a line: {"video": path, "prompt": str, "strength"?, "steps"?, "frames"?}
(the StreamV2V batch format's "video_path"/"input" and "text"/"edit_prompt" are accepted too; paths are
relative to the dataset file). Jobs are (clip, method) pairs; rank r of n takes every n-th job.
A finished job leaves DIR/jobs/<clip>/<method>/result.json and is skipped when the evaluation is run
again. Rank 0 waits for every rank (a gloo barrier when launched by torchrun) and merges all results
into DIR/table.md and DIR/table.csv: the mean per method (a Table-1-style summary) and per clip.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from v2v_core.errors import V2VError

from .registry import resolve
from .runner import run_comparison, slug

COLUMNS = ("warp_error", "warp_error_paper_compatible", "style_mae", "clip_consistency", "clip_text", "fps")


def load_dataset(path: str | Path) -> list[dict]:
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise V2VError(f"{path.name} line {n} is not JSON: {e}") from None
        video = d.get("video") or d.get("video_path") or d.get("input")
        prompt = d.get("prompt") or d.get("text") or d.get("edit_prompt")
        if not video or not prompt:
            raise V2VError(f"{path.name} line {n} needs a video and a prompt.")
        v = Path(video)
        rows.append({"video": str(v if v.is_absolute() else path.parent / v), "prompt": prompt,
                     "strength": d.get("strength"), "steps": d.get("steps"), "frames": d.get("frames"),
                     "id": d.get("id") or f"{n:04d}-{slug(Path(video).stem)}"})
    if not rows:
        raise V2VError(f"{path.name} has no jobs.")
    return rows


def _dist():
    """(rank, world size, barrier) from torchrun/accelerate's environment; one rank without a launcher."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world == 1:
        return 0, 1, lambda: None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return rank, world, dist.barrier


def evaluate(dataset, methods: str, out_dir, backbone="toy", size: int = 256, frames: int | None = None,
             seed: int = 0, strength: float = 0.4, steps: int = 2, clip_model: str | None = None,
             log=print) -> dict | None:
    rows = load_dataset(dataset)
    presets = resolve(methods)
    out_dir = Path(out_dir)
    rank, world, barrier = _dist()
    jobs = [(r, p) for r in rows for p in presets]
    done = ran = 0
    for k, (row, preset) in enumerate(jobs):
        if k % world != rank:
            continue
        job_dir = out_dir / "jobs" / row["id"] / slug(preset.name)
        if (job_dir / "result.json").exists():
            done += 1
            continue
        rep = run_comparison(row["video"], row["prompt"], [preset], job_dir, backbone=backbone, size=size,
                             frames=row["frames"] or frames, seed=seed, strength=row["strength"] or strength,
                             steps=row["steps"] or steps, clip_model=clip_model)
        m = rep["methods"][preset.name]
        result = {"clip": row["id"], "video": row["video"], "prompt": row["prompt"], "method": preset.name,
                  **{c: m.get(c) for c in COLUMNS}, "frames": rep["settings"]["frames"], "rank": rank}
        (job_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")   # written last: marks done
        ran += 1
    log(f"rank {rank}/{world}: ran {ran} jobs, skipped {done} finished")
    barrier()
    if rank != 0:
        return None
    return merge(out_dir, [r["id"] for r in rows], [p.name for p in presets])


def merge(out_dir: Path, clips: list[str], methods: list[str]) -> dict:
    results = {}
    for c in clips:
        for m in methods:
            p = out_dir / "jobs" / c / slug(m) / "result.json"
            if not p.exists():
                raise V2VError(f"Job {c} / {m} has no result: run the evaluation again to finish it.")
            results[(c, m)] = json.loads(p.read_text())

    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}"

    means = {m: {c: (float(np.mean(vals)) if (vals := [results[(k, m)][c] for k in clips
                                                           if results[(k, m)].get(c) is not None]) else None)
                 for c in COLUMNS} for m in methods}
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {m} | " + " | ".join(fmt(means[m][c]) for c in COLUMNS) + " |" for m in methods]
    lines += ["", "Per clip:", "", "| clip | method | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {c} | {m} | " + " | ".join(fmt(results[(c, m)].get(k)) for k in COLUMNS) + " |"
              for c in clips for m in methods]
    table = "\n".join(lines) + "\n"
    (out_dir / "table.md").write_text(table)
    with open(out_dir / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", "method", *COLUMNS])
        for m in methods:
            w.writerow(["mean", m, *[means[m][c] for c in COLUMNS]])
        for c in clips:
            for m in methods:
                w.writerow([c, m, *[results[(c, m)].get(k) for k in COLUMNS]])
    return {"means": means, "table": table}
