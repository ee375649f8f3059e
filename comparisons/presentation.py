"""How a report is shown: the summary table's rows, headers and legend, what its warp errors were measured at, and
the Compare tab's plotly figures. Pure functions of a report dict (no backbone, no gradio); service re-exports them
for the UI."""
from __future__ import annotations


def _r(v, digits=2):
    return None if v is None else round(v, digits)


def summary_rows(rep: dict) -> list[list]:
    rows = []
    for n, m in rep["methods"].items():
        rows.append([n, _r(m.get("warp_error")), _r(m.get("warp_error_paper_compatible")), _r(m.get("warp_error_self_flow")),
                     _r(m.get("style_mae")), _r(m.get("fps")), _r(m.get("seconds"), 1),
                     round((m["bank_bytes"][-1] if m.get("bank_bytes") else 0) / 2 ** 20, 2)])
    return rows


SUMMARY_HEADERS = ["method", "warp ↓", "warp (paper) ↓", "warp (self-flow) ↓", "style MAE ↓", "fps", "s", "bank MiB"]
SUMMARY_LEGEND = ("*warp*: warp error on the source's optical flow (0-255, lower is steadier; the table's title says the "
                  "size and frame count it was measured at); *warp (paper)*: the same with the reference script's "
                  "uint8 arithmetic; *warp (self-flow)*: the same with the flow estimated on the edit itself (every "
                  "result has it; the only warp error of results without a source); *style MAE*: distance to the toy prompt's filter target (toy prompts only); *fps*: "
                  "frames a second, without the first frames' warm-up and an OpenVINO run's one-off conversion; *s*: seconds "
                  "for the whole clip, all included; *bank MiB*: temporal memory held at the last frame.")


def measured_at(rep: dict) -> str:
    """What every warp error of a report was measured at, e.g. "warp error at 256x256 px over 24 frames":
    the same clip at another size or length gives another figure (README, "Metrics")."""
    st = rep.get("settings") or {}
    first = next(iter(rep["methods"].values()), {}) if rep.get("methods") else {}
    series = first.get("warp_error_series") or first.get("warp_error_self_flow_series")
    size = first.get("size") or ([st["size"]] * 2 if st.get("size") else None)
    n = first.get("frames") or st.get("frames") or (len(series) + 1 if series else None)
    where = (f" at {size[0]}x{size[1]} px" if size else "") + (f" over {n} frames" if n else "")
    return f"warp error{where}" if where else "warp error (size and frames not recorded)"


def placeholder_figure(text: str):
    """An empty chart that says what will appear: shown when the page opens, so the browser has the charting library
    loaded before the first results arrive (a first click's results are on screen at once, charts included)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(height=220, xaxis_visible=False, yaxis_visible=False, margin=dict(t=20, b=20),
                      annotations=[dict(text=text, showarrow=False, font=dict(size=14, color="#888"))])
    return fig


def warp_error_figure(rep: dict):
    """Per-frame warp error on the source's flow; when no result has a source, the self-flow figure,
    titled as such (the two are never drawn together)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    with_source = any(m.get("warp_error_series") for m in rep["methods"].values())
    key = "warp_error_series" if with_source else "warp_error_self_flow_series"
    for n, m in rep["methods"].items():
        if m.get(key):
            fig.add_trace(go.Scatter(y=m[key], mode="lines", name=n))
    flow = next(iter(rep["methods"].values())).get("flow", "?") if rep["methods"] else "?"
    what = f"flow: {flow} on the source" if with_source else f"flow: {flow} estimated on each edit itself (no source)"
    at = measured_at(rep)
    # short title lines and the legend below: the plot stays readable at a phone's width
    fig.update_layout(title=dict(text=f"{at[0].upper() + at[1:]},<br>per frame pair ({what};<br>lower is steadier)",
                                 font=dict(size=14)),
                      xaxis_title="frame pair (i, i+1)", yaxis_title="warp error (0..255)", height=400,
                      legend=dict(orientation="h", yanchor="top", y=-0.25), margin=dict(t=80))
    return fig


def bank_figure(rep: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for n, m in rep["methods"].items():
        fig.add_trace(go.Scatter(y=[b / 2 ** 20 for b in m.get("bank_bytes") or []], mode="lines", name=n))
    recorded = any(m.get("bank_bytes") for m in rep["methods"].values())
    fig.update_layout(title="Temporal memory held per stream" + ("" if recorded else "<br>(not recorded: no online method "
                                                                                  "of this studio ran)"),
                      xaxis_title="frame", yaxis_title="MiB", height=380,
                      legend=dict(orientation="h", yanchor="top", y=-0.25))
    return fig
