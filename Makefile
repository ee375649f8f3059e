# The README's two commands. `make app` installs and starts the studio; `make test` installs and tests.
PY ?= python3

install:
	$(PY) -m pip install -q -r requirements.txt

install-dev:
	$(PY) -m pip install -q -r requirements-dev.txt

app: install
	$(PY) app.py

test: install-dev browser-deps
	$(PY) -m pytest -q

test-slow: install-dev
	$(PY) -m pytest -q -m slow

svdiff-checkpoints:  ## re-train the shipped SVDiff memories for the toy backbone (12-14 min each for v4.3 with both cores of a 2-core machine, plus about 4 min of teacher runs made once for the three; v3.4's took 9)
	for m in 1 8 16; do V2V_THREADS=torch $(PY) -m v2v_core train-svdiff --synthetic 48 --memory-size $$m --steps 300 --half --objective consistent \
		--teacher-cache out/svdiff-teachers.pt --out v2v_core/svdiff_checkpoints/toy-$${m}x$${m}.safetensors || exit 1; done

browser-deps:  ## Debian Chromium for the browser tests (Playwright drives it; no browser download)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "Chromium could not be installed (not root?): the browser tests will skip"

.PHONY: install install-dev app test test-slow browser-deps svdiff-checkpoints
