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
# API keys are required: on the first start (no active key in the database yet) make an admin key in
# data/admin.key, readable only by you, and say where it is. Later starts leave keys alone
# (manage them with `.venv/bin/ecgfm-ked keys create|list|revoke`).
ECGFM_CLI=.venv/bin/ecgfm-ked bash scripts/first-admin-key.sh
exec .venv/bin/ecgfm-ked serve --bundle "$BUNDLE" --host "${ECGFM_HOST:-127.0.0.1}" --port "${ECGFM_PORT:-8000}"
