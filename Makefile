# Every target bootstraps its own virtualenv from a clean clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./jobtrail-data
ONLY ?=

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@$(BIN)/jobtrail init --data $(DATA)
	@echo "a token:  $$($(BIN)/jobtrail token --data $(DATA) --site demo --user you --role admin)"
	@echo "then try: curl -s http://127.0.0.1:8000/api/usage -H 'Authorization: Bearer <token>'"
	$(BIN)/jobtrail serve --data $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY),)

clean:
	rm -rf $(VENV) bench/results .pytest_cache .mypy_cache .ruff_cache
