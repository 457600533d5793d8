# gpuctl: two commands do all set-up on a fresh machine.
#   make run            venv + install + open the control center (local provider, no account)
#   make run ARGS="run validate --json"    the same engine, headless
#   make test           install what tests need (system packages too) and run them
#   make bench          benchmarks, printed as ratios against baselines run in-process
#   make lint           ruff + import contracts

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; override for a GPU workstation, e.g. make run TORCH="torch>=2.1,<3"
TORCH  ?= torch==2.13.0
ARGS   ?=
APT_PACKAGES := openssh-server openssh-client rsync tmux
PYTEST_ARGS ?=
# pip quietly. The editable install maps top-level folders into the gpuctl namespace,
# for which setuptools prints a block of warnings a newcomer should not meet first.
PIP := PYTHONWARNINGS="ignore:Editable installation$${PYTHONWARNINGS:+,$$PYTHONWARNINGS}" \
	$(BIN)/python -m pip install -q

.PHONY: run test bench lint format system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml setup.py | $(BIN)/python
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[dev]"
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/gpuctl $(ARGS)

system-deps:
	@missing=""; \
	for tool in /usr/sbin/sshd rsync tmux ssh-keygen; do \
	  command -v $$tool >/dev/null 2>&1 || [ -x $$tool ] || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages for tests (missing:$$missing)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

test: system-deps $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	@for script in tests/bench/bench_*.py; do \
	  echo "== $$script"; \
	  $(BIN)/python $$script || exit 1; \
	done

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests/test_architecture.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
