#!/usr/bin/env bash
# README command 2: set up (idempotent, Debian packages included where possible) and run every test.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --system --cluster
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
