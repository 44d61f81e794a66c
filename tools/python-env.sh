#!/usr/bin/env bash
# The Python environment of corockpt's Python tests and benchmark: a virtual environment
# outside the clone (COROCKPT_VENV, default ~/.cache/corockpt-venv: torch is 5 GB, made
# once and reused by every clone and CI run on this machine) holding
# python/requirements-test.txt, and the package itself installed from this clone
# (pip install ./python, which builds the extension in build-python/ with the compiler
# cache). Prints the environment's python on its last line.
#   tools/python-env.sh            set up (idempotent: quick when nothing changed)
set -euo pipefail
cd "$(dirname "$0")/.."

# The compiler cache of tools/dev.sh, for the extension's build.
export CCACHE_DIR="${CCACHE_DIR:-${COROCKPT_CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corockpt-ccache}}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"

venv="${COROCKPT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/corockpt-venv}"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  echo "python-env: creating $venv" >&2
  python3 -m venv "$venv"
fi
# Quiet and quick when everything is there already (pip only checks).
"$python" -m pip install --disable-pip-version-check -q -r python/requirements-test.txt >&2
# --no-build-isolation: the build tools are in the environment, and the build folder
# (build-python/) is then reused from one install to the next.
"$python" -m pip install --disable-pip-version-check -q --no-build-isolation ./python >&2
echo "$python"
