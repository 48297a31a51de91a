#!/usr/bin/env bash
# `make test`: install, start every backend the suite needs, then run it all.
# Backends are required here: a test that cannot reach one fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "test.sh: $*"; }

bash scripts/install.sh
bash scripts/docker-engine.sh start
bash scripts/swarm.sh start
bash scripts/test-images.sh
bash scripts/chromium.sh  # Debian's chromium, for the dashboard's browser tests (Playwright drives it)
bash scripts/build-image.sh >/dev/null  # the op-job image of pfcon 6 (PFCON_OP_IMAGE; cached layers)
bash scripts/swift-aio.sh start
eval "$(bash scripts/swift-aio.sh env)"
bash scripts/s3-server.sh start
eval "$(bash scripts/s3-server.sh env)"
bash scripts/podman-engine.sh start
eval "$(bash scripts/podman-engine.sh env)"
bash scripts/k8s-cluster.sh start  # Kubernetes 1.20 on the same engine (built once, cached)
eval "$(bash scripts/k8s-cluster.sh env)"
bash scripts/slurm-cluster.sh start  # SLURM 22.05: slurmctld + two slurmd (node2 in its own netns)
eval "$(bash scripts/slurm-cluster.sh env)"

say "static checks: import-linter (architecture), ruff, mypy (strict on the domain)"
.venv/bin/lint-imports
.venv/bin/ruff check src tests bench
.venv/bin/mypy

export PFCON_REQUIRE_BACKENDS=1
# The fault-injection suite stops and restarts the Docker engine (which the swarm and the
# kubelet run on): it runs last, after everything that needs those backends steady.
say "test suite (everything but fault injection)"
.venv/bin/python -m pytest tests -q -p no:cacheprovider -m "not faults" "$@"
say "fault-injection suite"
.venv/bin/python -m pytest tests -q -p no:cacheprovider -m faults "$@"
