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
	@token=$$($(BIN)/jobtrail token --data $(DATA) --site demo --user you --role admin); \
	echo "a token for site demo: $$token"; \
	echo "then try a lead evaluation (a lead, a document, the job, the job list):"; \
	echo "  curl -s -X PUT http://127.0.0.1:8000/api/ops/leads/lead_1 -H \"Authorization: Bearer $$token\" -H 'X-Site-Id: demo' -H 'Content-Type: application/json' -d '{\"first_name\":\"Maria\",\"last_name\":\"Lopez\",\"email\":\"maria@example.com\",\"monthly_rent\":1800}'"; \
	echo "  curl -s -X POST 'http://127.0.0.1:8000/api/ops/leads/lead_1/documents?document_type=pay_stub' -H \"Authorization: Bearer $$token\" -H 'X-Site-Id: demo' -H 'Content-Type: text/plain' --data-binary 'Pay stub. Employee: Maria Lopez. Gross monthly pay: 6500.00 USD'"; \
	echo "  curl -s -X POST http://127.0.0.1:8000/api/ops/leads/lead_1/ai-evaluation -H \"Authorization: Bearer $$token\" -H 'X-Site-Id: demo' -H 'X-User-Id: you'"; \
	echo "  curl -s http://127.0.0.1:8000/api/jobs -H \"Authorization: Bearer $$token\""
	$(BIN)/jobtrail up --data $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY),)

clean:
	rm -rf $(VENV) bench/results .pytest_cache .mypy_cache .ruff_cache
