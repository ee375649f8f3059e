"""Results bundles: a documented, versioned folder (or zip) of one comparison's videos and figures, so
results made anywhere (the studio on a GPU, another tool, a published gallery) are measured, replayed
and voted on the same way, with no model loaded.

    python -m comparisons import --source SRC.mp4 --prompt P --result NAME=EDIT.mp4 ... --out-dir DIR
    python -m comparisons evaluate-results LIST.json --root DIR --out-dir OUT

A bundle (format_version 1) is a folder holding
    report.json   {"format_version": 1, "settings": {...}, "input": "input.mp4" | null,
                   "mosaic": "mosaic.mp4" | null, "methods": {name: {"video": "NAME.mp4", metrics...}}}
    input.mp4     the source as processed (absent when the results came without their source)
    NAME.mp4      one H.264 mp4 per result, frame i matching source frame i
    mosaic.mp4    labelled tiles of all of them (optional)
    report.md     the table (optional)
Paths in report.json are file names inside the bundle. `comparisons run` and the Compare tab write
exactly this, and the zip the Compare tab offers is this folder zipped.

Metrics: with a source, both source-flow warp errors (the studio's and the paper-compatible one) as
`python -m v2v_core metrics` computes them; always `warp_error_self_flow`, the same warp error with the
flow estimated on the EDITED clip itself (a flicker measure that needs no source, never mixed with the
source-flow figure: its own key and label). Without a source the source-flow figures are null, with
the reason in `unavailable`.

A bundle zip is untrusted input: entry count and total size are checked before anything is extracted,
no entry may leave the extraction folder (absolute paths, `..`, links), only expected file types are
read (json, md, png and video files), videos must decode, nothing is executed or unpickled. Every
refusal is one V2VError that says what is wrong.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from v2v_core.errors import V2VError

FORMAT_VERSION = 1
REPORT = "report.json"
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
ALLOWED_SUFFIXES = (".json", ".md", ".png", *VIDEO_SUFFIXES)
MAX_FILES = int(os.environ.get("V2V_BUNDLE_MAX_FILES", "64"))
MAX_BYTES = int(float(os.environ.get("V2V_BUNDLE_MAX_MB", "500")) * 2 ** 20)
SELF_FLOW_LABEL = "flow estimated on the edited clip itself (no source needed; not comparable with source-flow figures)"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "result"


# -- writing ------------------------------------------------------------------------------------------
def portable(report: dict, out_dir: str | Path) -> dict:
    """The report as report.json stores it: versioned, every file a name inside the bundle."""
    out_dir = Path(out_dir)

    def rel(p):
        if p is None:
            return None
        p = Path(p)
        return p.name if p.parent.resolve() == out_dir.resolve() or not p.is_absolute() else str(p)

    rep = {k: v for k, v in report.items() if not k.startswith("_") and k not in ("bundle_dir",)}
    if isinstance(rep.get("settings"), dict) and isinstance(rep["settings"].get("input"), str):
        # the clip the run read, by name: its folder is the server's or the user's (an upload's temp folder), and a
        # bundle or report names nothing outside itself
        rep["settings"] = {**rep["settings"], "input": Path(rep["settings"]["input"]).name}
    rep["format_version"] = FORMAT_VERSION
    rep["input"] = rel(report.get("input"))
    rep["mosaic"] = rel(report.get("mosaic"))
    rep["methods"] = {n: {**m, "video": rel(m["video"])} for n, m in report["methods"].items()}
    return rep


def write_report(report: dict, out_dir: str | Path, markdown: str | None = None) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / REPORT
    path.write_text(json.dumps(portable(report, out_dir), indent=2, default=str) + "\n")
    if markdown is not None:
        (out_dir / "report.md").write_text(markdown + "\n")
    return path


def zip_bundle(out_dir: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (its files at the zip's top level)."""
    out_dir, zip_path = Path(out_dir), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(out_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in ALLOWED_SUFFIXES and f.resolve() != zip_path.resolve():
                z.write(f, f.name)
    return zip_path


# -- reading (untrusted) ----------------------------------------------------------------------------------
def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, or V2VError when it could leave the folder; None for folders."""
    name = info.filename.replace("\\", "/")
    if info.is_dir() or name.endswith("/"):
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", name) or any(part in ("..", "") for part in p.parts):
        raise V2VError(f"The bundle zip has an entry '{info.filename}' that points outside its folder: refused "
                       "(make the zip from the bundle folder's files).")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise V2VError(f"The bundle zip has a link '{info.filename}': links are refused; zip the files themselves.")
    if p.suffix.lower() not in ALLOWED_SUFFIXES:
        raise V2VError(f"The bundle zip has '{info.filename}', which is not a file a bundle holds (allowed: "
                       f"{', '.join(ALLOWED_SUFFIXES)}).")
    return p


def safe_extract(zip_path: str | Path, dest: str | Path, max_files: int | None = None,
                 max_bytes: int | None = None) -> Path:
    """Extract a bundle zip into dest after checking every entry; sizes are enforced while writing
    too (a zip can lie about them). Limits default to MAX_FILES / MAX_BYTES (V2V_BUNDLE_MAX_FILES /
    V2V_BUNDLE_MAX_MB)."""
    max_files = MAX_FILES if max_files is None else max_files
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    dest = Path(dest)
    try:
        z = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise V2VError(f"{Path(zip_path).name} is not a readable zip file ({e}).") from None
    with z:
        infos = z.infolist()
        if len(infos) > max_files:
            raise V2VError(f"The bundle zip holds {len(infos)} entries; at most {max_files} are accepted.")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise V2VError(f"The bundle zip unpacks to {declared / 2 ** 20:.0f} MiB; at most "
                           f"{max_bytes / 2 ** 20:.0f} MiB are accepted.")
        members = [(i, _safe_member(i)) for i in infos]
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        for info, rel in members:
            if rel is None:
                continue
            target = (dest / Path(*rel.parts)).resolve()
            if root not in target.parents:
                raise V2VError(f"The bundle zip's entry '{info.filename}' points outside its folder: refused.")
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise V2VError(f"The bundle zip unpacks to more than {max_bytes / 2 ** 20:.0f} MiB: refused.")
                    out.write(chunk)
    return dest


def _find_report(folder: Path) -> Path:
    direct = folder / REPORT
    if direct.is_file():
        return direct
    found = [p for p in folder.rglob(REPORT) if p.is_file()]
    if len(found) == 1:                                    # a zip of the folder itself (one level down)
        return found[0]
    raise V2VError(f"No {REPORT} in the bundle: a results bundle is the folder that `python -m comparisons run` or "
                   "`import` writes (or its zip).")


def load_bundle(path: str | Path, extract_to: str | Path | None = None) -> dict:
    """A bundle folder or zip -> the report with absolute paths (the same shape `run_comparison` returns),
    plus "bundle_dir". Checks the format version and that every listed video is there and decodes."""
    from v2v_core.video import probe

    path = Path(path)
    if not path.exists():
        raise V2VError(f"No such bundle: {path.name}.")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise V2VError(f"{path.name} is not a bundle: give its folder or a .zip of it.")
        path = safe_extract(path, extract_to or tempfile.mkdtemp(prefix="v2v-bundle-"))
    rep_path = _find_report(path)
    folder = rep_path.parent
    try:
        rep = json.loads(rep_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise V2VError(f"The bundle's {REPORT} is not valid JSON ({e}).") from None
    if not isinstance(rep, dict) or not isinstance(rep.get("methods"), dict) or not isinstance(rep.get("settings"), dict):
        raise V2VError(f"The bundle's {REPORT} lacks 'settings' or 'methods': not a results bundle.")
    version = rep.get("format_version")
    if version != FORMAT_VERSION:
        raise V2VError(f"The bundle's format_version is {version!r}; this studio reads version {FORMAT_VERSION}. "
                       "Re-export it with this version of the studio.")

    def resolve(name, what):
        if name is None:
            return None
        if not isinstance(name, str):
            raise V2VError(f"The bundle lists {what} as {name!r}, not a file name.")
        p = PurePosixPath(name.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or len(p.parts) != 1:
            raise V2VError(f"The bundle lists {what} as '{name}': files must be names inside the bundle.")
        f = folder / p.name
        if not f.is_file():
            raise V2VError(f"The bundle lists {what} '{name}', which is not in it.")
        if f.suffix.lower() not in VIDEO_SUFFIXES:
            raise V2VError(f"The bundle lists {what} '{name}', which is not a video file.")
        try:
            probe(f)
        except V2VError as e:
            raise V2VError(f"The bundle's {what} '{name}' is not a readable video: {e}") from None
        return str(f)

    rep["input"] = resolve(rep.get("input"), "input video")
    rep["mosaic"] = resolve(rep.get("mosaic"), "mosaic video")
    if not rep["methods"]:
        raise V2VError("The bundle lists no results.")
    for name, m in rep["methods"].items():
        if not isinstance(m, dict):
            raise V2VError(f"The bundle's entry for '{name}' is not an object.")
        m["video"] = resolve(m.get("video"), f"video of '{name}'")
    rep["bundle_dir"] = str(folder)
    return rep


# -- importing outside results ---------------------------------------------------------------------------
def mosaic_frame(tiles: list[np.ndarray], labels: list[str], cols: int | None = None) -> np.ndarray:
    """Labelled tiles in a grid (uint8 RGB, all the same size): a run's mosaic and an import's."""
    import cv2

    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, (t, lab) in enumerate(zip(tiles, labels)):
        r, c = divmod(i, cols)
        tile = t.copy()
        cv2.rectangle(tile, (0, 0), (w, 18), (0, 0, 0), -1)
        cv2.putText(tile, lab[:40], (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return out


def self_flow_warp_error(edited: list[np.ndarray], flow: str = "dis") -> tuple[float, list[float]]:
    """Warp error of an edit with the flow estimated on the edit itself (needs no source)."""
    from v2v_core.flow import source_flow
    from v2v_core.metrics import warp_error

    return warp_error(edited, source_flow(edited, flow))


def result_metrics(source, edited, prompt: str | None, flow: str = "dis", clip_model: str | None = None) -> dict:
    """Every metric of one edited clip: source-flow warp errors (when `source` is given: exactly
    v2v_core.metrics.evaluate_clip), the self-flow warp error, CLIP where a model loads."""
    from v2v_core.metrics import evaluate_clip, match_to_source

    if len(edited) < 2:
        raise V2VError(f"An edited clip needs at least 2 frames; this one has {len(edited)}.")
    out: dict = {"unavailable": {}}
    if source is not None:
        m = evaluate_clip(source, edited, flow=flow, prompt=prompt, clip_model=clip_model)
        out.update(m)
        compared = match_to_source(edited, source[0].shape)
    else:
        compared = edited
        out.update({"warp_error": None, "warp_error_paper_compatible": None, "warp_error_series": None,
                    "flow": flow, "frames": len(edited), "size": [int(edited[0].shape[1]), int(edited[0].shape[0])],
                    "clip_consistency": None, "clip_text": None,
                    "clip_unavailable_reason": "no source given" if clip_model is None else None})
        reason = "no source clip given: the source-flow warp error needs the source's optical flow"
        out["unavailable"].update({"warp_error": reason, "warp_error_paper_compatible": reason})
        if clip_model is not None:
            from v2v_core.metrics import clip_metrics, load_clip

            scorer, why = load_clip(clip_model)
            if scorer is None:
                out["clip_unavailable_reason"] = why
            else:
                out.update(clip_metrics(edited, prompt, scorer))
    we, series = self_flow_warp_error(compared, flow)
    out.update({"warp_error_self_flow": we, "warp_error_self_flow_series": series,
                "warp_error_self_flow_label": SELF_FLOW_LABEL})
    return out


def import_results(results: dict[str, str | Path], out_dir: str | Path, source: str | Path | None = None,
                   prompt: str | None = None, size: int | None = None, frames: int | None = None,
                   source_group: str | None = None, flow: str = "dis", clip_model: str | None = None,
                   max_frames: int | None = None) -> dict:
    """Make a bundle from outside videos: nothing is regenerated. Each edit is read frame by frame,
    compared with the source as `python -m v2v_core metrics` does (resized to the source's frames, frame i
    to frame i), and written as an H.264 mp4 at that size. Returns the report (absolute paths)."""
    from v2v_core.video import VideoWriter, probe, read_video


    if not results:
        raise V2VError("Give at least one result: --result NAME=EDITED.mp4.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = frames or max_frames
    src_frames, fps = (None, None)
    if source is not None:
        src_frames, fps = read_video(source, limit, size)
        if len(src_frames) < 2:
            raise V2VError(f"The source clip {Path(source).name} has {len(src_frames)} frame(s); at least 2 are needed.")
    edits, names = {}, {}
    for name, path in results.items():
        if not name or not str(name).strip():
            raise V2VError(f"A result has no name: write --result NAME={path}.")
        fr, f_fps = read_video(path, limit if src_frames is None else len(src_frames), None if src_frames else size)
        if src_frames is not None and len(fr) > len(src_frames):
            fr = fr[:len(src_frames)]
        edits[name] = fr
        fps = fps or f_fps or probe(path).fps
        names[name] = f"{slug(name)}.mp4"
    if len(set(names.values())) < len(names):
        raise V2VError("Two results have names that make the same file name; give them distinct names.")
    report = {"format_version": FORMAT_VERSION,
              "settings": {"input": Path(source).name if source is not None else None, "prompt": prompt,
                           "source_group": source_group or (Path(source).stem if source is not None else out_dir.name),
                           "backbone": None, "imported": True, "size": size,
                           "frames": len(src_frames) if src_frames is not None else min(len(f) for f in edits.values()),
                           "flow": flow},
              "input": None, "mosaic": None, "methods": {}}
    if src_frames is not None:
        with VideoWriter(out_dir / "input.mp4", fps) as w:
            for f in src_frames:
                w.write(f)
        report["input"] = str(out_dir / "input.mp4")
    written = {}
    for name, fr in edits.items():
        m = result_metrics(src_frames, fr, prompt, flow, clip_model)
        from v2v_core.metrics import match_to_source

        shown = match_to_source(fr, src_frames[0].shape) if src_frames is not None else fr
        written[name] = shown
        with VideoWriter(out_dir / names[name], fps) as w:
            for f in shown:
                w.write(f)
        m.update({"video": str(out_dir / names[name]), "source_file": Path(results[name]).name, "online": None,
                  "fps": None, "style_mae": None, "bank_bytes": [], "bank_tokens": [], "imported": True})
        report["methods"][name] = m
    tiles = ([("input", src_frames)] if src_frames is not None else []) + list(written.items())
    shape = tiles[0][1][0].shape
    if all(t[1][0].shape == shape for t in tiles):
        n = min(len(t[1]) for t in tiles)
        with VideoWriter(out_dir / "mosaic.mp4", fps) as w:
            for i in range(n):
                w.write(mosaic_frame([t[1][i] for t in tiles], [t[0] for t in tiles]))
        report["mosaic"] = str(out_dir / "mosaic.mp4")
    write_report(report, out_dir, imported_table(report))
    return report


def _fmt(v, digits=2):
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def imported_table(report: dict) -> str:
    s = report["settings"]
    at = f" at {s['size']} px" if s.get("size") else ""
    head = f"Imported results; source `{s['input'] or 'none'}`, prompt \"{s['prompt'] or ''}\", {s['frames']} frames{at}."
    lines = [head, "", "| result | warp error ↓ | paper-compatible ↓ | self-flow warp error ↓ | CLIP consistency | file |",
             "|---|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        lines.append(f"| {name} | {_fmt(m.get('warp_error'))} | {_fmt(m.get('warp_error_paper_compatible'))} | "
                     f"{_fmt(m.get('warp_error_self_flow'))} | {_fmt(m.get('clip_consistency'))} | "
                     f"{m.get('source_file', '')} |")
    lines += ["", f"Warp error: flow `{s.get('flow', 'dis')}` on the source (n/a without a source); self-flow: "
              f"{SELF_FLOW_LABEL}."]
    return "\n".join(lines)
