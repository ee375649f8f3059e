"""Ablation grids on one clip, like the papers' ablation tables.

    python -m comparisons ablate INPUT --prompt P --grid streamv2v [--frames 48] [--out-dir DIR]

streamv2v: EA x FF over the dyme and queue banks, plus bank=none (where EA and FF have nothing to
work with, so all four EA/FF combinations are the per-frame baseline: one row, not four copies), with
the released code's FF defaults (0.8 / 0.98); streamv2v-paper: the same grid with the paper's (0.75 / 0.9).
svdiff: the per-frame baseline and memory sizes 1x1, 8x8, 16x16 (SVDiff's Table 3), shipped checkpoints.
Writes the runner's outputs plus ablation.md, ablation.png (bar chart) and ablation.plotly.json.
"""
from __future__ import annotations

import json
from pathlib import Path

from v2v_core.errors import V2VError
from v2v_core.streamv2v import StreamV2VConfig
from v2v_core.svdiff import SVDiffConfig

from .registry import ABLATION_GRIDS as GRIDS
from .registry import PAPER_FF, REGISTRY, STREAMV2V_PAPER, SVDIFF_PAPER, MethodPreset
from .runner import iter_comparison



def streamv2v_grid(paper_defaults: bool = False) -> list[MethodPreset]:
    out = []
    ff_defaults = PAPER_FF if paper_defaults else {}
    for bank in ("dyme", "queue"):
        for ea in (False, True):
            for ff in (False, True):
                cfg = StreamV2VConfig(extended_attention=ea, feature_fusion=ff, bank=bank, **ff_defaults)
                out.append(MethodPreset(f"EA {'on' if ea else 'off'}, FF {'on' if ff else 'off'}, {bank}",
                                        "StreamV2V ablation", STREAMV2V_PAPER, "streamv2v", cfg, tags=("ablation",)))
    out.append(MethodPreset("bank none (= per-frame baseline)", "StreamV2V with no bank", STREAMV2V_PAPER, "streamv2v",
                            StreamV2VConfig(bank="none"), tags=("ablation",)))
    return out


def grid_presets(grid: str) -> list[MethodPreset]:
    if grid in ("streamv2v", "streamv2v-paper"):
        return streamv2v_grid(paper_defaults=grid == "streamv2v-paper")
    if grid == "svdiff":
        return [REGISTRY["StreamDiffusion"]] + [
            MethodPreset(f"memory {m}x{m}", "SVDiff memory-size ablation", SVDIFF_PAPER, "svdiff",
                         SVDiffConfig(memory_size=m), tags=("ablation",)) for m in (1, 8, 16)]
    raise V2VError(f"Unknown grid '{grid}'; choose one of {', '.join(GRIDS)}.")


def value_range(values: list[float]) -> tuple[float, float]:
    """A y-axis range that shows the differences between settings (1.68 and 1.75 must not look equal):
    the values' span with a margin, not from 0."""
    lo, hi = min(values), max(values)
    pad = max(0.15 * (hi - lo), 0.02 * max(abs(hi), 1e-6))
    return lo - pad, hi + pad * 1.6          # room above the bars for their labels


def ablation_figure(methods: dict, title: str):
    """An interactive bar chart of warp error per setting (plotly), its axis zoomed on the values."""
    import plotly.graph_objects as go

    names = list(methods)
    we = [methods[n]["warp_error"] for n in names]
    fig = go.Figure(go.Bar(x=names, y=we, text=[f"{v:.2f}" for v in we], textposition="outside",
                           hovertemplate="%{x}<br>warp error %{y:.3f}<extra></extra>"))
    flow = methods[names[0]]["flow"] if names else "?"
    # a title in short lines (a phone's width), the axis says it does not start at 0
    fig.update_layout(title=dict(text=title.replace(", warp error", ",<br>warp error"), font=dict(size=14)),
                      yaxis_title=f"warp error ↓ ({flow} flow; not from 0)", height=440, margin=dict(b=140, t=90))
    if we:
        fig.update_yaxes(range=list(value_range(we)))
    return fig


def bar_chart(report: dict, title: str, png: Path, plotly_json: Path):
    """The chart as plotly JSON (what the UI shows) and as a PNG for the CLI's users, both zoomed alike."""
    names = list(report["methods"])
    we = [report["methods"][n]["warp_error"] for n in names]
    plotly_json.write_text(ablation_figure(report["methods"], title).to_json())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    bars = ax.bar(range(len(names)), we, color="#5b6cc0")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(*value_range(we))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("warp error (lower is more consistent; axis not from 0)")
    ax.set_title(title, fontsize=10)
    f.tight_layout()
    f.savefig(png, dpi=110)
    plt.close(f)


def ablation_title(grid: str, settings: dict) -> str:
    s = settings
    return (f"{grid} ablation: {Path(str(s['input'])).name}, \"{s['prompt']}\", warp error at {s['size']}x{s['size']} px "
            f"over {s['frames']} frames, {s['backbone']}")


def ablation_rows(methods: dict) -> str:
    rows = ["| setting | warp error ↓ | paper-compatible ↓ | style MAE ↓ | fps | bank MiB |", "|---|---|---|---|---|---|"]
    for n, m in methods.items():
        style = f"{m['style_mae']:.2f}" if m.get("style_mae") is not None else "n/a"
        rows.append(f"| {n} | {m['warp_error']:.2f} | {m['warp_error_paper_compatible']:.2f} | {style} | {m['fps']:.2f} | "
                    f"{(m['bank_bytes'][-1] if m['bank_bytes'] else 0) / 2**20:.2f} |")
    return "\n".join(rows)


def iter_ablation(input_path, prompt: str, grid: str, out_dir, **kw):
    """run_ablation as a generator: ("result", setting, entry) as each setting finishes, then
    ("report", None, report). kw as for the runner (progress, cancel, backbone, size, frames, ...)."""
    presets = grid_presets(grid)
    out_dir = Path(out_dir)
    for kind, name, value in iter_comparison(input_path, prompt, presets, out_dir, **kw):
        if kind == "result":
            yield kind, name, value
            continue
        report = value
        title = ablation_title(grid, report["settings"])
        rows = ablation_rows(report["methods"])
        (out_dir / "ablation.md").write_text(f"{title}\n\n{rows}\n")
        bar_chart(report, title, out_dir / "ablation.png", out_dir / "ablation.plotly.json")
        report["ablation_table"] = rows
        report["ablation_title"] = title
        (out_dir / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "_frames"},
                                                        indent=2, default=str) + "\n")
        yield "report", None, report


def run_ablation(input_path, prompt: str, grid: str, out_dir, **kw) -> dict:
    for kind, _, value in iter_ablation(input_path, prompt, grid, out_dir, **kw):
        if kind == "report":
            return value
    raise RuntimeError("the ablation ended without a report")
