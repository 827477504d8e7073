# The two quickstart commands are `make app` and `make test`; each installs what it needs first.
PY ?= python3
PIP = $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install install-dev install-extras app server classroom test lint bench

install:
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -r requirements-nodeps.txt
	$(PIP) --no-deps -e .

install-dev: install
	$(PIP) -r requirements-dev.txt

# Optional: importing RobustBench / timm models (python -m backend.imports); make app and make test work without it.
install-extras: install
	$(PIP) -r requirements-extras.txt

app: install
	$(PY) -m streamlit run app/main.py

server: install
	$(PY) -m backend.transport.server

# A class: backend (GPU if present) + app + the link to hand out (scripts/classroom.py; README "A classroom").
# e.g. make classroom CLASSROOM_ARGS="--host 192.168.1.20"   or   CLASSROOM_ARGS="--replicas 2" (nginx in front)
CLASSROOM_ARGS ?=
classroom: install
	$(PY) scripts/classroom.py $(CLASSROOM_ARGS)

test: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

bench: install
	$(PY) bench/interactive.py

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy
