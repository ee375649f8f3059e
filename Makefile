# The README's two commands. `make app` installs and starts the studio; `make test` installs and tests.
PY ?= python3

install:
	$(PY) -m pip install -q -r requirements.txt

install-dev:
	$(PY) -m pip install -q -r requirements-dev.txt

app: install
	$(PY) app.py

test: install-dev
	$(PY) -m pytest -q

test-slow: install-dev
	$(PY) -m pytest -q -m slow

.PHONY: install install-dev app test test-slow
