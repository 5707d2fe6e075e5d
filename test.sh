#!/usr/bin/env bash
# Run the whole test suite (sets up the venv on first use). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
bash tools/setup.sh
venv=${LRE_VENV:-$root/.venv}
"$venv/bin/ruff" check lre tests bench
exec "$venv/bin/python" -m pytest "$@"
