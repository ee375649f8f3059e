"""The field's evaluation lists, measured with the studio's metrics:

    python -m comparisons evaluate-results LIST.json --root DIR --out-dir OUT [--size N] [--clip-model M]

Reads either format and writes per-video rows plus means as results.csv, results.md and results.json
(resumable: rows already in results.json are kept, only missing ones are computed):
- StreamV2V's tools/eval.json: [{"src_vid_name", "vid_name", "prompt"}, ...]
- StreamDiffusionV2's evaluation/evaluation.json: [{"src_video_name", "output_video_name", "prompt",
  "height", "width", "fps"}, ...] (its height/width, when given, is the size the source is read at)
Names are paths under --root (a name without a suffix is looked up as .mp4, then other video types).
An entry without a source name (null or "") gets the source-free figures only (self-flow warp error).
Each row has both source-flow warp errors (as `python -m v2v_core metrics`), the flow used, the
self-flow warp error (flow estimated on the output itself) and CLIP scores where a model loads.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from v2v_core.errors import V2VError

from .bundle import VIDEO_SUFFIXES, result_metrics

COLUMNS = ("source", "output", "prompt", "frames", "warp_error", "warp_error_paper_compatible", "warp_error_self_flow",
           "clip_consistency", "clip_text", "flow")
MEAN_COLUMNS = COLUMNS[4:9]


def parse_entries(data) -> list[dict]:
    """Entries of either list format -> [{source, output, prompt, height, width}]."""
    if isinstance(data, dict):
        data = data.get("videos") or data.get("entries") or list(data.values())
    if not isinstance(data, list) or not data:
        raise V2VError("The list must be a JSON array of entries (StreamV2V's eval.json or StreamDiffusionV2's "
                       "evaluation.json).")
    out = []
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            raise V2VError(f"Entry {i} of the list is not an object.")
        if "vid_name" in e:
            out.append({"source": e.get("src_vid_name") or None, "output": e["vid_name"], "prompt": e.get("prompt"),
                        "height": None, "width": None})
        elif "output_video_name" in e:
            out.append({"source": e.get("src_video_name") or None, "output": e["output_video_name"],
                        "prompt": e.get("prompt"), "height": e.get("height"), "width": e.get("width")})
        else:
            raise V2VError(f"Entry {i} has neither vid_name (StreamV2V) nor output_video_name (StreamDiffusionV2): "
                           f"keys {sorted(e)}.")
    return out


def find_video(root: Path, name: str) -> Path:
    p = root / name
    if p.is_file():
        return p
    if not p.suffix:
        for suf in VIDEO_SUFFIXES:
            if p.with_suffix(suf).is_file():
                return p.with_suffix(suf)
    raise V2VError(f"{name} is not under {root.name}/ (looked for {p.name}"
                   f"{' with a video suffix' if not p.suffix else ''}).")


def _row_key(e: dict) -> str:
    return f"{e['source']}|{e['output']}"


def evaluate_results(list_path: str | Path, root: str | Path, out_dir: str | Path, size: int | None = None,
                     frames: int | None = None, flow: str = "dis", clip_model: str | None = None,
                     progress=None) -> dict:
    from v2v_core.video import read_video

    list_path, root, out_dir = Path(list_path), Path(root), Path(out_dir)
    try:
        entries = parse_entries(json.loads(list_path.read_text()))
    except (OSError, ValueError) as e:
        raise V2VError(f"Could not read {list_path.name} as JSON ({e}).") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    done_path = out_dir / "results.json"
    done = {}
    if done_path.exists():
        done = {_row_key(r): r for r in json.loads(done_path.read_text()).get("rows", [])}
    rows = []
    for i, e in enumerate(entries):
        key = _row_key(e)
        if key in done:
            rows.append(done[key])
            continue
        out_path = find_video(root, e["output"])
        side = size or (min(int(e["height"]), int(e["width"])) if e.get("height") and e.get("width") else None)
        source = read_video(find_video(root, e["source"]), frames, side)[0] if e["source"] else None
        edited, _ = read_video(out_path, frames, None if source is not None else side)
        m = result_metrics(source, edited, e["prompt"], flow, clip_model)
        row = {"source": e["source"], "output": e["output"], "prompt": e["prompt"], "frames": m["frames"],
               "warp_error": m["warp_error"], "warp_error_paper_compatible": m["warp_error_paper_compatible"],
               "warp_error_self_flow": m["warp_error_self_flow"], "clip_consistency": m["clip_consistency"],
               "clip_text": m["clip_text"], "flow": m["flow"], "size": m["size"], "note": m.get("note"),
               "clip_unavailable_reason": m["clip_unavailable_reason"]}
        rows.append(row)
        _write(out_dir, rows, entries, list_path, root)          # after every row: a stopped run resumes
        if progress is not None:
            progress(i + 1, len(entries), e["output"])
    return _write(out_dir, rows, entries, list_path, root)


def _mean(rows, col):
    vals = [r[col] for r in rows if r.get(col) is not None and np.isfinite(r[col])]
    return float(np.mean(vals)) if vals else None


def _write(out_dir: Path, rows: list[dict], entries, list_path: Path, root: Path) -> dict:
    means = {c: _mean(rows, c) for c in MEAN_COLUMNS}
    result = {"list": str(list_path), "root": str(root), "entries": len(entries), "rows": rows, "means": means}
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.get(c) for c in COLUMNS])
        w.writerow(["mean", "", "", ""] + [means[c] for c in MEAN_COLUMNS] + [""])
    (out_dir / "results.md").write_text(table(result) + "\n")
    result["table"] = table(result)
    return result


def table(result: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["| source | output | prompt | frames | size | warp error ↓ | paper-compatible ↓ | self-flow warp error ↓ | "
             "CLIP consistency | CLIP text |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        size = "x".join(map(str, r["size"])) if r.get("size") else ""
        lines.append(f"| {r['source'] or '(none)'} | {r['output']} | {r['prompt'] or ''} | {r['frames']} | {size} | "
                     f"{f(r['warp_error'])} | "
                     f"{f(r['warp_error_paper_compatible'])} | {f(r['warp_error_self_flow'])} | "
                     f"{f(r['clip_consistency'])} | {f(r['clip_text'])} |")
    m = result["means"]
    lines.append(f"| **mean** | | | | | {f(m['warp_error'])} | {f(m['warp_error_paper_compatible'])} | "
                 f"{f(m['warp_error_self_flow'])} | {f(m['clip_consistency'])} | {f(m['clip_text'])} |")
    flows = sorted({r["flow"] for r in result["rows"]})
    lines += ["", f"Warp error: flow `{', '.join(flows)}` on each source, at the size each row lists; self-flow: the "
              "flow estimated on the output itself (needs no source; not comparable with the source-flow figure)."]
    return "\n".join(lines)
