"""The web UI: cheap offline import, and the translate endpoint through gradio_client."""
import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT


def test_import_app_is_cheap_and_loads_no_model():
    code = ("import time, sys; t=time.time(); import app; "
            "print(json.dumps({'s': time.time()-t, 'torch': 'torch' in sys.modules, 'bb': app._backbone is None}))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bb"] and not r["torch"], r        # no model, not even torch, at import


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    import app

    _, url, _ = app.demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, show_error=True,
                                ssr_mode=False)
    c = Client(url, verbose=False)
    yield c
    c.close()
    app.demo.close()


def test_translate_endpoint(client, tmp_path):
    from gradio_client import handle_file

    video, report = client.predict(handle_file(str(ROOT / "examples" / "astronaut-pan.mp4")), "a cartoon", 128, 4,
                                   0.4, 2, 0, api_name="/translate")
    assert report["frames"] == 4 and report["settings"]["prompt"] == "a cartoon"
    assert str(video.get("video") if isinstance(video, dict) else video).endswith(".mp4")


def test_bad_input_is_a_message_not_a_crash(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video " * 100)
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(bad)), "a cartoon", 128, 4, 0.4, 2, 0, api_name="/translate")
    assert "Could not read" in str(e.value) or "video" in str(e.value).lower()
    # the app is still up
    time.sleep(0.1)
    _, report = client.predict(handle_file(str(ROOT / "examples" / "coffee-zoom.mp4")), "a sepia photo", 128, 2,
                               0.4, 1, 0, api_name="/translate")
    assert report["frames"] == 2
