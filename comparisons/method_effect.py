"""What each method changes on a model, per clip and style: every selected method beside the per-frame baseline.

    python -m comparisons method-effect CLIP [CLIP ...] --out-dir DIR [--styles invented|all|NAME,...]
        [--methods all] [--frames 48] [--size 256] [--backbone toy]

For each clip and each style (its first prompt), the selected methods run side by side with the studio's settings
(runner.run_comparison; one results bundle per clip and style under DIR), and the table keeps, per method, its warp
error, paper-compatible warp error, style MAE and mean absolute Laplacian over the per-frame baseline's on the same
frames (runner.relative_to_baseline): below 1 is steadier or nearer the style; a Laplacian ratio well below 1 means
a steadier output won by blurring. This is issue #30's "method_effect" (it lives here, not in `toy-eval`: the
methods' registry is in comparisons, which the core never imports). Writes method_effect.json and method_effect.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from v2v_core.errors import V2VError
from v2v_core.toy.styles import PSYCHEDELIC, STYLE_BY_NAME, STYLES, style_for_prompt

from .runner import BASELINE, RELATIVE_KEYS, get_backbone, run_comparison


def pick_styles(spec: str) -> list:
    """'invented' (the styles that invent content from the noise), 'all', or comma-separated style names or prompts;
    "psychedelic", the training-only style of stage 10's models (styles.PSYCHEDELIC), only by its name."""
    if spec == "invented":
        return [s for s in STYLES if not s.deterministic]
    if spec == "all":
        return list(STYLES)
    by_name, out = {**STYLE_BY_NAME, PSYCHEDELIC.name: PSYCHEDELIC}, []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        style = by_name.get(item) or style_for_prompt(item)
        if style is None:
            raise V2VError(f"Unknown style '{item}': use invented, all, or names from {', '.join(STYLE_BY_NAME)}.")
        out.append(style)
    return out


def method_effect(clips, styles, out_dir, methods="all", frames: int | None = 48, size: int = 256,
                  backbone="toy", progress=None, **settings) -> dict:
    """Rows (clip, style, method, its figures and their ratios to the baseline) over every clip x style. settings:
    run_comparison's seed, strength, steps."""
    bb = get_backbone(backbone) if isinstance(backbone, str) else backbone
    out_dir = Path(out_dir)
    rows = []
    for clip in clips:
        for style in styles:
            rep = run_comparison(clip, style.prompts[0], methods, out_dir / Path(clip).stem / style.name.replace(" ", "_"),
                                 backbone=bb, frames=frames, size=size, progress=progress, **settings)
            rel = rep["relative_to_baseline"]
            if rel is None:
                raise V2VError(f"method-effect needs the per-frame baseline ({BASELINE}) among the methods.")
            for name, m in rep["methods"].items():
                rows.append({"clip": Path(clip).stem, "style": style.name, "method": name, "frames": rep["settings"]["frames"],
                             **{k: m.get(k) for k in RELATIVE_KEYS}, "relative": rel["methods"][name]})
    result = {"backbone": bb.name, "size": size, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "method_effect.json").write_text(json.dumps(result, indent=1))
    (out_dir / "method_effect.md").write_text(markdown(result))
    return result


def _cell(value, ratio) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if ratio is None else f"{value:.2f} ({ratio:.2f}x)"


def markdown(result: dict) -> str:
    lines = [f"Backbone `{result['backbone']}`, {result['size']} px; each figure with its ratio to {BASELINE} on the same "
             "frames (warp errors, style MAE: below 1 is better; Laplacian: below 0.8 means won by blurring).", "",
             "| clip | style | method | warp error | warp error (paper-compatible) | style MAE | Laplacian |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['clip']} ({r['frames']} frames) | {r['style']} | {r['method']} | " +
                     " | ".join(_cell(r[k], r["relative"][k]) for k in RELATIVE_KEYS) + " |")
    return "\n".join(lines) + "\n"
