# One entry point for everything. `make run` runs the whole system, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.13 (mongoeco needs it): prefer a local interpreter (pyenv or PATH); otherwise let uv fetch one.
PYTHON313 := $(shell PYENV_VERSION=3.13.0 pyenv which python3.13 2>/dev/null \
	|| command -v python3.13 2>/dev/null \
	|| ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1)
ifneq ($(strip $(PYTHON313)),)
export UV_PYTHON := $(PYTHON313)
export UV_PYTHON_DOWNLOADS := never
else
export UV_PYTHON := 3.13
endif
# uv on PATH, else the copy `make uv` installs with pip (run as a module: no PATH change needed).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: help uv sync run test test-slow lint fmt typecheck bench demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

uv: ## install uv if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv

sync: uv ## create .venv with every package and tool (one lock file)
	@$(UV) sync --frozen --all-packages --group dev

run: sync ## run the whole system with embedded Kafka and MongoDB unless given
	@$(UV) run --frozen python -m shared.infra.launcher

test: sync ## run the whole test suite
	@$(UV) run --frozen pytest

test-slow: sync ## run only the tests marked slow (none yet is fine)
	@$(UV) run --frozen pytest -m slow; status=$$?; \
		if [ $$status -eq 5 ]; then echo "no slow tests selected"; exit 0; fi; exit $$status

lint: sync ## ruff and mypy --strict
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy shared/src services/wallet/src services/ipn-gateway/src services/p2p/src services/trading/src bench demo

fmt: sync ## format and autofix
	@$(UV) run --frozen ruff format .
	@$(UV) run --frozen ruff check --fix .

bench: sync ## run the benchmark suite: prints a table, writes build/bench.json (docs/performance.md)
	@$(UV) run --frozen python -m bench --out build/bench.json

demo: sync ## against a running `make run`: the seed's phase-4 checklist as fresh users (✓/✗ per check)
	@$(UV) run --frozen python -m demo

clean: ## remove build outputs
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
