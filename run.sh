#!/usr/bin/env bash
# README command 1: set up (idempotent) and run the main job.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m core demo "$@"
