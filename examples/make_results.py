"""Make the results the Compare tab shows on an example's first click, from the shipped embedded model.

    python examples/make_results.py        # writes examples/results/CLIP.zip for every example clip (about 1 min)

Each zip is a results bundle (comparisons.bundle) of the example's clip and prompt (app.EXAMPLE_PROMPTS) with the
Compare tab's default methods (app.DEFAULT_METHODS), 24 frames at 256 px, seed 0, the studio's defaults; its
report names the weights it was made with (styles.weights_digest of v2v_core/toy/model). The studio shows a bundle
only while those are the shipped weights, and a test fails when they are not: re-run this after retraining.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comparisons.bundle import zip_bundle  # noqa: E402
from comparisons.service import EXAMPLE_RESULTS, made_in_advance  # noqa: E402

COMMAND = "python examples/make_results.py"


def main():
    import app
    from comparisons.runner import run_comparison
    from v2v_core.threads import apply

    apply()
    EXAMPLE_RESULTS.mkdir(exist_ok=True)
    for clip in app.EXAMPLES:
        stem = Path(clip).stem
        prompt = app.EXAMPLE_PROMPTS[stem][0]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / stem
            run_comparison(clip, prompt, list(app.DEFAULT_METHODS), out, frames=24, size=256, seed=0)
            rep = json.loads((out / "report.json").read_text())
            rep["settings"]["made_in_advance"] = {**made_in_advance(), "command": COMMAND}
            (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
            print("wrote", zip_bundle(out, EXAMPLE_RESULTS / f"{stem}.zip"))


if __name__ == "__main__":
    main()
