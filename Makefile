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

browser-deps:  ## Debian Chromium for the browser tests (Playwright drives it; no browser download)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "Chromium could not be installed (not root?): the browser tests will skip"

.PHONY: install install-dev app test test-slow browser-deps
