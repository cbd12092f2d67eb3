#!/usr/bin/env bash
# Idempotent setup shared by both README commands: a virtual environment at .venv/ with torch and
# the project (editable) plus its test tools.  `--system` also installs the Debian packages the
# real-Krita tests need (krita, python3-pyqt5, xvfb) when apt-get can run; `--cluster` also installs
# the optional `cluster` extra (Ray Serve: `python -m core serve --cluster` and its tests).
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM=0
EXTRAS=test
for arg in "$@"; do
    case "$arg" in
        --system) SYSTEM=1 ;;
        --cluster) EXTRAS=test,cluster ;;
        *) echo "setup: unknown option $arg (known: --system --cluster)" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
TORCH_VERSION=${DD_TORCH_VERSION:-2.13.0}   # see DEVELOPERS.md: CI must stay satisfiable by 2.13.0

if ((SYSTEM)); then
    missing=()
    command -v krita >/dev/null 2>&1 || missing+=(krita)
    command -v xvfb-run >/dev/null 2>&1 || missing+=(xvfb xauth)
    /usr/bin/python3 -c "import PyQt5" >/dev/null 2>&1 || missing+=(python3-pyqt5)
    if ((${#missing[@]})); then
        SUDO=""
        [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
        if command -v apt-get >/dev/null 2>&1 && ($SUDO true) 2>/dev/null; then
            echo "setup: installing ${missing[*]} (apt)" >&2
            $SUDO apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
                krita python3-pyqt5 xvfb xauth >&2
        else
            echo "setup: cannot install ${missing[*]} (no apt-get or no root): the real-Krita tests will be skipped" >&2
        fi
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv" >&2
    $PY -m venv .venv
fi
key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp=".venv/.setup-$key-${EXTRAS/,/-}"
# a venv set up with the cluster extra also serves the plain setup
if [[ ! -f "$stamp" && ! ( "$EXTRAS" == test && -f ".venv/.setup-$key-test-cluster" ) ]]; then
    echo "setup: installing torch==$TORCH_VERSION and the project into .venv (a few minutes the first time)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" >&2
    rm -f .venv/.setup-*
    touch "$stamp"
fi
