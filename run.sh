#!/usr/bin/env bash
# README command 1: set up (idempotent), then open the standalone editor on the sample image with its
# red ball selected.  Without a display it says so and runs the headless demo instead;
# `./run.sh demo [--out DIR] [--steps N]` runs the demo in any case.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if [ "${1:-}" = "demo" ]; then
    shift
    exec .venv/bin/python -m core demo "$@"
fi
if .venv/bin/python -m plugin.diffusion_dock.editor --check-display; then
    exec .venv/bin/python -m plugin.diffusion_dock.editor resources/sample.png --select resources/sample_mask.png "$@"
fi
echo "Running the headless demo instead (outputs in out/demo/)." >&2
exec .venv/bin/python -m core demo
