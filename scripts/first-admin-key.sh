#!/usr/bin/env bash
# The first admin API key, for a new user's first start (scripts/start.sh runs this before serving).
#
# When keys are required (ECGFM_AUTH unset or "required") and the service's database
# (ECGFM_DATABASE_URL, else the SQLite file in ECGFM_DATA_DIR, default data/) holds no active key:
# make an admin key, write it to $ECGFM_DATA_DIR/admin.key (mode 0600: readable only by you; written
# to a temporary file and renamed, so it is never half-written or readable by others) and say on
# stderr where it is and how to use it. When an active key exists, nothing is done: later starts
# never make another. A database that cannot be read stops here (exit 1), before anything is made.
# ECGFM_CLI names the ecgfm-ked command (default .venv/bin/ecgfm-ked).
set -euo pipefail

CLI=${ECGFM_CLI:-.venv/bin/ecgfm-ked}
DATA_DIR=${ECGFM_DATA_DIR:-data}
KEY_FILE="$DATA_DIR/admin.key"

[ "${ECGFM_AUTH:-required}" = required ] || exit 0
active=$("$CLI" keys list --active-only)
[ -z "$active" ] || exit 0

mkdir -p "$DATA_DIR"
tmp=$(mktemp "$KEY_FILE.XXXXXX")  # created 0600
trap 'rm -f "$tmp"' EXIT
"$CLI" keys create --name "local-admin-$(date -u +%Y%m%dT%H%M%SZ)" --scope admin > "$tmp"
mv -f "$tmp" "$KEY_FILE"
trap - EXIT
{
  echo "An admin API key was made for this first start and saved in $KEY_FILE (readable only by you). Use it as:"
  echo "  curl -H \"Authorization: Bearer \$(cat $KEY_FILE)\" http://127.0.0.1:${ECGFM_PORT:-8000}/model"
  echo "Make narrower keys with: $CLI keys create --name NAME --scope diagnose|labels|admin"
} >&2
