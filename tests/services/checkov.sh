#!/usr/bin/env bash
# Run checkov on terraform/ from its own virtual environment.
#
# checkov pins old networkx/boto3, so it never goes into .venv: it lives in
# .services/checkov-venv (git-ignored), created on first use with an exact pin.
# Exit status: checkov's (non-zero when any check fails). Skips are allowed only
# inline in the HCL with a reason (`#checkov:skip=CKV_...:why`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
VENV="${CHECKOV_VENV:-$ROOT/.services/checkov-venv}"
PYTHON="${PYTHON:-python3}"

installed=""
if [[ -x "$VENV/bin/pip" ]]; then
    installed="$("$VENV/bin/pip" show checkov 2>/dev/null | sed -n 's/^Version: //p' || true)"
fi
if [[ "$installed" != "$CHECKOV_VERSION" ]]; then
    echo "checkov.sh: creating $VENV with checkov==$CHECKOV_VERSION" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip==25.3
    "$VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"
fi

exec "$VENV/bin/checkov" --directory "$ROOT/terraform" --framework terraform \
    --quiet --compact --skip-download "$@"
