# The platform's entry points. `make up` and `make test` are the two set-up commands of README.md;
# both run scripts/bootstrap.sh first (idempotent: seconds once everything is installed).
.PHONY: up down status test bench bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

up: bootstrap
	.venv/bin/medimg up

down:
	.venv/bin/medimg down

status:
	.venv/bin/medimg status

test: bootstrap
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest

bench: bootstrap
	.venv/bin/python benchmarks/run_all.py
