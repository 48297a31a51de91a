# pfcon — see README.md. `make run` starts the server, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help install run test unit integration lint engine images swift bench image clean

help:
	@echo "make run    start the server on 127.0.0.1:30005 (PORT overrides; pfcon's env vars honoured)"
	@echo "make test   install, start Docker/Swift and test images, run the whole suite"
	@echo "make unit | integration | lint | bench | image"

install:
	@bash scripts/install.sh

run:
	@bash scripts/run.sh

test:
	@bash scripts/test.sh

unit: install
	.venv/bin/python -m pytest tests/unit -q

integration: install engine images swift
	eval "$$(bash scripts/swift-aio.sh env)" && PFCON_TEST_SWIFT=1 .venv/bin/python -m pytest tests/integration -q

lint: install
	.venv/bin/lint-imports
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

engine:
	@bash scripts/docker-engine.sh start

images:
	@bash scripts/test-images.sh

swift:
	@bash scripts/swift-aio.sh start

bench: install engine images swift
	bash scripts/slurm-cluster.sh start
	bash scripts/s3-server.sh start
	eval "$$(bash scripts/swift-aio.sh env)" && eval "$$(bash scripts/s3-server.sh env)" && \
	eval "$$(bash scripts/slurm-cluster.sh env)" && .venv/bin/python bench/bench.py $(BENCH_ARGS)

image:
	@bash scripts/build-image.sh

clean:
	rm -rf .run .pytest_cache build *.egg-info
