#!/usr/bin/env bash
# Set up and start the service on http://127.0.0.1:8000 with a working model bundle:
#  1. model_store/bundle if it exists;
#  2. else the real weights (Zenodo 14881564 + Bio_ClinicalBERT) fetched and exported, where the network allows;
#  3. else an UNTRAINED demo bundle, clearly marked as such in every response.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUNDLE=${ECGFM_BUNDLE_DIR:-model_store/bundle}
if [ ! -f "$BUNDLE/manifest.json" ]; then
  if .venv/bin/ecgfm-ked fetch --export-to "$BUNDLE"; then
    echo "real ECGFM-KED bundle exported to $BUNDLE"
  else
    echo "" >&2
    echo "!!! Could not fetch the real weights (see the message above)." >&2
    echo "!!! Building an UNTRAINED DEMO bundle: its outputs mean nothing clinically." >&2
    echo "!!! Put the real files in place and run: ecgfm-ked export --checkpoint CKPT --text-model DIR --out $BUNDLE --overwrite" >&2
    .venv/bin/ecgfm-ked demo-bundle --out "$BUNDLE" --overwrite
  fi
fi
exec .venv/bin/ecgfm-ked serve --bundle "$BUNDLE" --host "${ECGFM_HOST:-127.0.0.1}" --port "${ECGFM_PORT:-8000}"
