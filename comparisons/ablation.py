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
from .runner import run_comparison



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


def bar_chart(report: dict, title: str, png: Path, plotly_json: Path):
    names = list(report["methods"])
    we = [report["methods"][n]["warp_error"] for n in names]
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=names, y=we, text=[f"{v:.2f}" for v in we], textposition="outside"))
    fig.update_layout(title=title, yaxis_title=f"warp error ↓ (flow: {report['methods'][names[0]]['flow']})")
    plotly_json.write_text(fig.to_json())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 4))
    bars = ax.bar(range(len(names)), we, color="#5b6cc0")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("warp error (lower is more consistent)")
    ax.set_title(title, fontsize=10)
    f.tight_layout()
    f.savefig(png, dpi=110)
    plt.close(f)


def run_ablation(input_path, prompt: str, grid: str, out_dir, **kw) -> dict:
    presets = grid_presets(grid)
    out_dir = Path(out_dir)
    report = run_comparison(input_path, prompt, presets, out_dir, **kw)
    rows = ["| setting | warp error ↓ | paper-compatible ↓ | style MAE ↓ | fps | bank MiB |", "|---|---|---|---|---|---|"]
    for n, m in report["methods"].items():
        style = f"{m['style_mae']:.2f}" if m.get("style_mae") is not None else "n/a"
        rows.append(f"| {n} | {m['warp_error']:.2f} | {m['warp_error_paper_compatible']:.2f} | {style} | {m['fps']:.2f} | "
                    f"{(m['bank_bytes'][-1] if m['bank_bytes'] else 0) / 2**20:.2f} |")
    s = report["settings"]
    title = f"{grid} ablation: {Path(str(s['input'])).name}, \"{s['prompt']}\", {s['frames']} frames, {s['backbone']}"
    (out_dir / "ablation.md").write_text(f"{title}\n\n" + "\n".join(rows) + "\n")
    bar_chart(report, title, out_dir / "ablation.png", out_dir / "ablation.plotly.json")
    report["ablation_table"] = "\n".join(rows)
    (out_dir / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "_frames"}, indent=2,
                                                    default=str) + "\n")
    return report
