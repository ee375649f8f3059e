"""The first-five-minutes speed figures of #21, in ONE run:
1. the engine's frames per second alone and with one competing busy process (the studio's thread policy,
   as app.py sets it; benchmarks/contention.py compares policies);
2. the Live tab in Chromium with its fake camera (the app started as `python app.py`): the frames per
   second the page shows and the camera-to-screen latency p50/p95 (the page's own figures, #live-figures),
   for one session and for two sessions at once.

    python benchmarks/live.py [--seconds 20] [--runtime torch|openvino|openvino-bf16-unet|openvino-bf16]

Needs Chromium (`make browser-deps`) and playwright. Targets (#21): busy >= 0.7x alone; one session >= 0.7x
the engine alone; two sessions >= 0.3x each; p95 latency <= 2 x the engine's time per frame + 0.3 s.
Note the browser runs on the same machine as the server here (it takes CPU from the model).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from conftest import launch_chromium, start_app  # noqa: E402
from contention import measure  # noqa: E402
from v2v_core.config import RUNTIMES  # noqa: E402


def live_figures(url: str, sessions: int, seconds: float, runtime: str = "torch") -> list[dict]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        pages = []
        for _ in range(sessions):
            pg = browser.new_context(permissions=["camera"], viewport={"width": 1400, "height": 1000}).new_page()
            pg.goto(url, wait_until="load")
            pg.get_by_role("tab", name="Live").click()
            pg.locator("#cam").wait_for()
            if runtime != "torch":
                pg.locator("#live-runtime label", has_text=runtime).first.click()
            access = pg.get_by_text("Click to Access Webcam")
            if access.count():
                access.first.click()
            pages.append(pg)
        for pg in pages:
            pg.locator("#cam button:has-text('Record')").click()
        for pg in pages:
            pg.wait_for_selector("#live-out img", timeout=300_000)     # OpenVINO: the conversion first
        pages[0].wait_for_timeout(seconds * 1000)
        out = []
        for pg in pages:
            fig = pg.locator("#live-figures")
            out.append({"fps": float(fig.get_attribute("data-fps") or 0), "p95_ms": float(fig.get_attribute("data-p95") or 0),
                        "text": fig.inner_text(), "model_ms": pg.evaluate("window.v2vLive.modelMs")})
        browser.close()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20, help="seconds of streaming per measurement (default: 20)")
    ap.add_argument("--frames", type=int, default=30, help="timed frames of the engine measurement (default: 30)")
    ap.add_argument("--runtime", default="torch", choices=[r for r in RUNTIMES if r != "auto"],
                    help="the Live tab's runtime; the engine figure above it stays PyTorch's, so each line also gives "
                         "the ratio to the model's own time per frame in one session on that runtime (default: torch)")
    args = ap.parse_args(argv)
    alone = measure("studio", args.frames, 256, busy=False)["fps"]
    busy = measure("studio", args.frames, 256, busy=True)["fps"]
    print(f"engine (toy, 256 px, per-frame path, studio thread policy): {alone:.2f} fps alone, {busy:.2f} fps with one "
          f"busy process: {busy / alone:.2f}x (target >= 0.7x)", flush=True)
    proc, url = start_app({}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        own = None       # the model's fps on this runtime, one session (the server's own time per frame)
        for sessions in (1, 2):
            figs = live_figures(url, sessions, args.seconds, args.runtime)
            own = own or 1000 / figs[0]["model_ms"]
            for i, f in enumerate(figs):
                print(f"Live on {args.runtime}, {sessions} session(s), session {i + 1}: shown {f['fps']:.2f} fps = "
                      f"{f['fps'] / own:.2f}x the model's own {own:.2f} fps on {args.runtime} in one session", flush=True)
                print(f"Live, {sessions} session(s), session {i + 1}: shown {f['fps']:.2f} fps = {f['fps'] / alone:.2f}x the "
                      f"engine alone (target >= {0.7 if sessions == 1 else 0.3}x); p95 latency {f['p95_ms']:.0f} ms "
                      f"(target <= {2000 / alone + 300:.0f} ms = 2 x {1000 / alone:.0f} ms + 300 ms)", flush=True)
                print(f"    page: {f['text']}", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
