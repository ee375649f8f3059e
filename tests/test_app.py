"""The web UI: cheap offline import, and the public API through gradio_client."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "astronaut-pan.mp4"


def test_import_app_is_cheap_and_loads_no_model():
    code = ("import json, sys, time; t = time.time(); import app; "
            "print(json.dumps({'s': time.time() - t, 'torch': 'torch' in sys.modules, 'tabs': len(app.demo.blocks)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert not r["torch"], r          # no model, not even torch, at import
    assert r["tabs"] > 20


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    import app

    _, url, _ = app.demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                                        show_error=True, ssr_mode=False)
    c = Client(url, verbose=False)
    yield c
    c.close()
    app.demo.close()


def test_api_endpoints_are_named(client):
    eps = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/compare" in eps and "/metrics" in eps
    params = [p["parameter_name"] for p in eps["/compare"]["parameters"]]
    assert params == ["video", "prompt", "methods", "size", "frames", "seed"]


def test_compare_two_methods_returns_report_with_numbers(client):
    from gradio_client import handle_file

    report, files = client.predict(handle_file(str(EXAMPLE)), "a cartoon", ["StreamDiffusion", "StreamV2V"], 128, 6, 0,
                                   api_name="/compare")
    assert set(report["methods"]) == {"StreamDiffusion", "StreamV2V"}
    for m in report["methods"].values():
        assert isinstance(m["warp_error"], float) and m["fps"] > 0 and len(m["bank_bytes"]) == 6
    assert len(files) == 3        # mosaic + one video per method


def test_metrics_endpoint(client):
    from gradio_client import handle_file

    r = client.predict(handle_file(str(EXAMPLE)), handle_file(str(EXAMPLE)), api_name="/metrics")
    assert r["warp_error"] < 5.0 and r["warp_error"] < r["warp_error_paper_compatible"]
    assert r["flow"] == "dis" and r["frames"] == 24


def test_bad_upload_is_a_message_and_the_app_stays_up(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video " * 100)
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(bad)), "a cartoon", ["StreamDiffusion"], 128, 4, 0, api_name="/compare")
    assert "Could not read" in str(e.value)
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(EXAMPLE)), "  ", ["StreamDiffusion"], 128, 4, 0, api_name="/compare")
    assert "prompt is empty" in str(e.value)
    report, _ = client.predict(handle_file(str(EXAMPLE)), "a sepia photo", ["StreamDiffusion"], 128, 3, 0,
                               api_name="/compare")
    assert report["settings"]["frames"] == 3


def test_no_vote_or_study_endpoint_in_the_public_api(client):
    """Votes come only from the participant view: gradio_client lists no endpoint that can vote, start a
    study session or read the admin view."""
    api = client.view_api(print_info=False, return_format="dict")
    names = list(api["named_endpoints"]) + [str(k) for k in api.get("unnamed_endpoints", {})]
    assert not [n for n in names if any(w in n.lower() for w in ("vote", "answer", "begin", "next_or_warn", "admin",
                                                                  "create_study", "lambda"))], names


def test_app_start_prints_no_warnings(tmp_path):
    """A quiet start: `python app.py` writes nothing to stderr while it comes up and serves."""
    import time

    from conftest import start_app

    err = tmp_path / "stderr.txt"
    with open(err, "w") as fh:
        proc, _ = start_app({}, stdout=subprocess.DEVNULL, stderr=fh)
        try:
            time.sleep(2)
        finally:
            proc.terminate()
            proc.wait(10)
    assert err.read_text().strip() == ""


def test_progress_board_counts_frames_per_method_and_an_honest_remaining_time():
    import app

    board = {"StreamDiffusion": {"done": 24, "total": 24, "stage": "done in 8.0 s"},
             "StreamV2V": {"done": 6, "total": 24, "stage": "generating"}}
    html = app.progress_board(board, ["StreamDiffusion", "StreamV2V", "TokenFlow"], "note")
    assert html.count("class='pb-row'") == 3 and "frame 6 / 24" in html and "width:25%" in html
    assert "TokenFlow" in html and "waiting" in html            # not started yet: on the board all the same
    # 30 frames done in 30 s: 1 s a frame; 18 frames of StreamV2V and at least 1 of TokenFlow to go
    assert app.remaining_note(board, ["StreamDiffusion", "StreamV2V", "TokenFlow"], 30.0).startswith("About 19 s left")
    assert app.remaining_note({}, ["StreamV2V"], 5.0) == ""     # no frame done yet: no guess


def test_example_clips_say_the_toy_trained_on_their_photos():
    """The examples are rendered from scikit-image photographs (examples/make_examples.py) that are in the toy's
    training pool: with the toy as backbone the examples' label must say so, and it may say so only while it is true."""
    import app
    from comparisons import service
    from v2v_core.toy.data import SKIMAGE_PHOTOS

    photos = {Path(e).stem.split("-")[0] for e in app.EXAMPLES}
    assert photos, "no example clips found"
    said = "trained on these photos" in app.EXAMPLES_LABEL
    assert said == (service.BACKBONE == "toy" and photos <= set(SKIMAGE_PHOTOS)), (photos, app.EXAMPLES_LABEL)


def test_replay_restores_the_runs_input_prompt_methods_and_settings(tiny_backbone, monkeypatch):
    """Load results sets the Compare controls to the replayed run's (so they describe what is on screen and Run
    recomputes it): its input clip, prompt, ticked methods and run settings; a bad zip changes nothing."""
    import app
    from comparisons import service

    monkeypatch.setattr(service, "get_backbone", lambda name: tiny_backbone)
    rep = service.compare(str(EXAMPLE), "a cartoon", ["StreamDiffusion", "TokenFlow"], size=64, frames=4, seed=3)
    # a fresh run fills every column of the summary table, the self-flow warp error too (it was empty)
    assert all(isinstance(row[3], float) and row[3] > 0 for row in rep["table"]), rep["table"]
    monkeypatch.setattr(app.gr, "Warning", lambda *a, **k: None)
    out = app.load_results(rep["zip"], None, None, "a thermal image")      # the prompt box held another prompt
    controls = dict(zip(app.REPLAY_CONTROLS, out[-len(app.REPLAY_CONTROLS):]))
    assert Path(controls["input"]["value"]).name == "input.mp4" and Path(controls["input"]["value"]).is_file()
    assert controls["prompt"]["value"] == "a cartoon"
    assert controls["methods"]["value"] == ["StreamDiffusion", "TokenFlow"]
    assert {k: controls[k]["value"] for k in ("size", "frames", "seed", "strength", "steps")} == \
        {"size": 64, "frames": 4, "seed": 3, "strength": 0.4, "steps": 2}
    bad = app.load_results(str(EXAMPLE), None, None, "a cartoon")             # not a zip: a warning, nothing changes
    assert all(u == app.gr.update() for u in bad) and len(bad) == len(out)


def test_every_example_ships_results_made_with_the_shipped_weights(tmp_path):
    """examples/make_results.py's bundles: one per example clip, its prompt and the default methods, 24 frames at
    256 px, made with the weights the studio ships (retrained weights fail here until the command is re-run); an
    upload that only shares an example's name gets nothing made in advance."""
    import app
    from comparisons import service
    from v2v_core.toy import MODEL_DIR
    from v2v_core.toy.styles import weights_digest

    assert app.EXAMPLES
    for clip in app.EXAMPLES:
        rep = service.example_results(clip)
        assert rep is not None, f"no results made in advance for {clip}: run python examples/make_results.py"
        s = rep["settings"]
        assert s["made_in_advance"]["weights"] == weights_digest(MODEL_DIR), "made with other weights: re-run it"
        assert s["prompt"] == app.EXAMPLE_PROMPTS[Path(clip).stem][0] and (s["frames"], s["size"]) == (24, 256)
        assert list(rep["methods"]) == list(app.DEFAULT_METHODS) and all(Path(v).is_file() for v in rep["videos"].values())
    impostor = tmp_path / Path(app.EXAMPLES[0]).name
    impostor.write_bytes(b"not the example clip")
    assert service.example_results(str(impostor)) is None


def test_an_examples_click_shows_its_results_labelled_as_made_in_advance():
    import app

    class Select:       # what Gradio passes for a click on the first example
        index = 0

    out = app.show_example_results("toy", Select())
    n = len(app.METHOD_NAMES)
    shown = {u["label"] for u in out[:n] if u.get("visible")}
    assert shown == set(app.DEFAULT_METHODS)
    board, ticks = out[-2], out[-1]
    assert "Made in advance with the embedded model" in board and "press Run" in board
    assert ticks["value"] == list(app.DEFAULT_METHODS)
    # picked another backbone: the embedded model's results are not shown as if they were that backbone's
    other = app.show_example_results("sd15-random", Select())
    assert len(other) == len(out) and all(u == {"__type__": "update"} for u in other)


def test_the_ablation_examples_carry_captions_and_set_their_prompt():
    """The Ablation tab's examples are the Compare tab's: each sets the clip AND its prompt (the cat example used to
    keep "a thermal image"), under the same captions; the Correspondence tab's carry the captions too."""
    import gradio as gr

    import app

    datasets = {next(c.elem_id for c in b._components if c.elem_id): b for b in app.demo.blocks.values()
                if isinstance(b, gr.Dataset)}
    rows, labels = app.example_rows()
    for tab in ("compare-input", "ablation-input"):
        d = datasets[tab]
        assert len(d._components) == 2 and d._components[1].label == "Prompt"
        assert [s[1] for s in d.samples] == [r[1] for r in rows] and d.sample_labels == labels
    cat = next(i for i, r in enumerate(rows) if "chelsea" in r[0])
    assert datasets["ablation-input"].samples[cat][1] == "a pencil sketch"
    assert datasets["corr-input"].sample_labels == labels
