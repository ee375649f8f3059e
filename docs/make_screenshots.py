"""Screenshot every tab of the studio in Chromium (Debian's, driven by Playwright) into docs/.

    python docs/make_screenshots.py [--study study.db]     # starts the app itself on a free port
    python docs/make_screenshots.py --first-click-only      # only the first click and the backbone picker (20 s)

The committed screenshots used a study made from two `python -m comparisons run` results on the
example clips (astronaut-pan "a thermal image", coffee-zoom "a sepia photo"; StreamDiffusion,
StreamV2V, TokenFlow; 24 frames) with 3 simulated annotators' random votes cast through
comparisons.study.vote before the script ran (the script itself casts none).

First, as a visitor meets the studio: the backbone picker opened (picker.png; the app runs with
V2V_BACKBONES=sd15-random, so the list shows an operator's entry too) and the page right after a click on the first
example (first_click.png: its results made in advance, no run).
Every tab is shot at desktop size (1400x1000, tab_NAME.png) and at phone size (390x844,
tab_NAME_phone.png), full page. Each tab is used as a person would: Compare runs two methods on an example, Ablation runs the grid,
Live streams Chromium's fake camera, Correspondence clicks a point, the User study tab opens the
admin view and /study the participant's page at desktop and phone size (the study database must exist:
`python -m comparisons study create ...`).

Before pressing Run it waits until the example clip has really loaded into that tab's input video
(#compare-input / #ablation-input / #corr-input hold a <video> with a source): counting <video>
elements on the page raced with the example thumbnails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tests"))

from conftest import launch_chromium, start_app  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default=None, help="a study database for the User study tab")
    ap.add_argument("--first-click-only", action="store_true", help="only picker*.png and first_click*.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    env = {"V2V_STUDY_PASSWORD": "demo", "V2V_BACKBONE": "toy", "V2V_BACKBONES": "sd15-random",
           **({"V2V_STUDY_DB": str(Path(args.study).resolve())} if args.study else {})}
    app, url = start_app(env)       # the tests' launcher: a free port, returned once it serves
    try:
        with sync_playwright() as p:
            b = launch_chromium(p)
            pg = b.new_context(permissions=["camera"], viewport={"width": 1400, "height": 1000}).new_page()
            pg.goto(url, wait_until="load")

            def shoot(name: str):
                """The page at desktop size, then at phone size (the layout reflows), back to desktop."""
                pg.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                pg.set_viewport_size({"width": 390, "height": 844})
                pg.wait_for_timeout(1200)
                pg.screenshot(path=str(OUT / f"{name}_phone.png"), full_page=True)
                pg.set_viewport_size({"width": 1400, "height": 1000})
                pg.wait_for_timeout(800)

            def load_example(input_id: str, label: str | None = None):
                # examples render as a table (several inputs), a gallery (one input) or labelled buttons
                if label:
                    pg.get_by_text(label).first.click()
                else:
                    pg.locator("tr.tr-body:visible, button.gallery-item:visible, .gallery-item:visible").first.click()
                pg.wait_for_function(f"(() => {{ const v = document.querySelector('#{input_id} video'); "
                                     "return v && (v.currentSrc || v.src); })()", timeout=60_000)
                pg.wait_for_timeout(500)

            # The backbone picker, opened (each entry that cannot run here marked, the reasons below it)
            pg.wait_for_selector("#backbone-status :text('Unavailable here')", timeout=60_000)
            pg.locator("#backbone-status summary").click()      # the reasons unfolded
            pg.locator("#backbone-picker input").click()
            pg.wait_for_timeout(800)
            pg.screenshot(path=str(OUT / "picker.png"))
            pg.set_viewport_size({"width": 390, "height": 844})
            pg.wait_for_timeout(1200)
            pg.locator("#backbone-picker input").click()
            pg.wait_for_timeout(800)
            pg.screenshot(path=str(OUT / "picker_phone.png"))
            pg.keyboard.press("Escape")
            pg.set_viewport_size({"width": 1400, "height": 1000})
            pg.wait_for_timeout(800)
            # Compare: the first click on an example shows its results made in advance
            load_example("compare-input", "astronaut, camera pans: snowy scene")
            pg.wait_for_selector("#progress-board :text('Made in advance')", timeout=30_000)
            pg.wait_for_timeout(1500)
            shoot("first_click")
            if args.first_click_only:
                b.close()
                return
            pg.get_by_role("button", name="Run", exact=True).first.click()
            pg.wait_for_function("document.querySelectorAll('.result-video video').length >= 2", timeout=600_000)
            pg.wait_for_timeout(1500)
            pg.wait_for_selector("#progress-board :text('Done.')", timeout=300_000)
            shoot("tab_compare")
            # Ablation
            pg.get_by_role("tab", name="Ablation").click()
            pg.wait_for_timeout(500)
            load_example("ablation-input")
            pg.get_by_role("button", name="Run ablation").click()
            pg.wait_for_selector("#ablation-board :text('Done.')", timeout=900_000)
            pg.wait_for_timeout(1500)
            shoot("tab_ablation")
            # Live
            pg.get_by_role("tab", name="Live").click()
            access = pg.get_by_text("Click to Access Webcam")
            if access.count():
                access.first.click()
            pg.locator("#cam button:has-text('Record')").click()
            pg.wait_for_selector("#live-out img", timeout=120_000)
            pg.wait_for_timeout(8000)
            shoot("tab_live")
            pg.locator("#cam button:has-text('Stop')").click()
            # Correspondence
            pg.get_by_role("tab", name="Correspondence").click()
            pg.wait_for_timeout(500)
            load_example("corr-input")
            pg.get_by_role("button", name="Run", exact=True).last.click()
            pg.wait_for_selector("#corr-frame img", timeout=300_000)
            img = pg.locator("#corr-frame img").first     # a locator's click scrolls it into view first (the
            box = img.bounding_box()                        # full-width match view below can scroll the page)
            img.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.45})
            pg.wait_for_selector("#corr-view img", timeout=60_000)
            pg.wait_for_timeout(1000)
            shoot("tab_correspondence")
            # User study: the admin view (User study tab), then the participant's own page (/study)
            pg.get_by_role("tab", name="User study").click()
            if args.study:
                pg.get_by_label("Admin password (V2V_STUDY_PASSWORD)").fill("demo")
                pg.get_by_role("button", name="Show results").click()
                pg.wait_for_timeout(4000)
            shoot("tab_user_study_admin")
            pg.goto(f"{url}/study", wait_until="load")
            if args.study:
                pg.get_by_label("Your name or code").fill("demo-participant")
                pg.get_by_role("button", name="Start / continue").click()
                pg.wait_for_selector("#study-left video", timeout=60_000)
                pg.wait_for_timeout(1500)
            shoot("tab_user_study")
            b.close()
    finally:
        app.terminate()
        app.wait(10)
    print("wrote", sorted(p.name for p in OUT.glob("*.png")))


if __name__ == "__main__":
    main()
