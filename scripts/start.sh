#!/usr/bin/env bash
# Set up and start the service on http://127.0.0.1:8000 with a working model bundle
# (scripts/init-bundle.sh decides which; the Docker init service runs the same script):
#  1. model_store/bundle if it exists (a demo bundle there is replaced once real files are given);
#  2. else model_store/checkpoint.pt + model_store/text_model/ exported, if you put them there;
#  3. else the real weights (Zenodo 14881564 + Bio_ClinicalBERT) fetched and exported, where the network allows;
#  4. else an UNTRAINED demo bundle, clearly marked as such in every response.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUNDLE=${ECGFM_BUNDLE_DIR:-model_store/bundle}
ECGFM_CLI=.venv/bin/ecgfm-ked PYTHON=.venv/bin/python \
  ECGFM_CHECKPOINT=${ECGFM_CHECKPOINT:-model_store/checkpoint.pt} \
  ECGFM_TEXT_MODEL=${ECGFM_TEXT_MODEL:-model_store/text_model} \
  bash scripts/init-bundle.sh "$BUNDLE"
# API keys are required: on the first start (no active key in the database yet) make an admin key, keep
# it in a file only you can read, and say where it is. Later starts leave keys alone
# (manage them with `.venv/bin/ecgfm-ked keys create|list|revoke`).
DATA_DIR=${ECGFM_DATA_DIR:-data}
KEY_FILE="$DATA_DIR/admin.key"
if [ "${ECGFM_AUTH:-required}" = required ] && [ -z "$(.venv/bin/ecgfm-ked keys list --active-only)" ]; then
  mkdir -p "$DATA_DIR"
  (umask 077 && .venv/bin/ecgfm-ked keys create --name "local-admin-$(date -u +%Y%m%dT%H%M%SZ)" --scope admin > "$KEY_FILE")
  echo "An admin API key was made for this first start and saved in $KEY_FILE (readable only by you). Use it as:" >&2
  echo "  curl -H \"Authorization: Bearer \$(cat $KEY_FILE)\" http://127.0.0.1:${ECGFM_PORT:-8000}/model" >&2
fi
exec .venv/bin/ecgfm-ked serve --bundle "$BUNDLE" --host "${ECGFM_HOST:-127.0.0.1}" --port "${ECGFM_PORT:-8000}"
