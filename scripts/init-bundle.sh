#!/usr/bin/env bash
# Make sure a model bundle exists in TARGET (default $ECGFM_BUNDLE_DIR, else model_store/bundle).
# Shared by scripts/start.sh and the one-shot `ecgfm-ked-init` service of docker-compose.yml.
#
#   scripts/init-bundle.sh [TARGET]
#
# In this order, the first that applies:
#  1. TARGET already holds a bundle (manifest.json): nothing is done -- unless it is an UNTRAINED
#     demo bundle and real model files (2 or 3) are now available, which then replace it.
#  2. $ECGFM_SOURCE_BUNDLE holds a bundle: it is copied.
#  3. $ECGFM_CHECKPOINT (the Zenodo .pt file) and $ECGFM_TEXT_MODEL (Bio_ClinicalBERT config.json +
#     vocab.txt) exist: they are exported (`ecgfm-ked export`); a failure stops here (exit 1).
#  4. unless ECGFM_INIT_FETCH=0: the real weights are fetched and exported (`ecgfm-ked fetch`).
#  5. unless ECGFM_INIT_DEMO=0: an UNTRAINED demo bundle (`ecgfm-ked demo-bundle`), said loudly;
#     every response from it carries "untrained": true.
#
# A bundle is built in a sibling directory and renamed into place only when complete, so an
# interrupted run never leaves a half-written TARGET. ECGFM_CLI names the ecgfm-ked command
# (default: ecgfm-ked on PATH); it needs the [export] extra (torch), never the serving install.
set -euo pipefail

TARGET=${1:-${ECGFM_BUNDLE_DIR:-model_store/bundle}}
CLI=${ECGFM_CLI:-ecgfm-ked}
PYTHON=${PYTHON:-python3}
SOURCE_BUNDLE=${ECGFM_SOURCE_BUNDLE:-}
CHECKPOINT=${ECGFM_CHECKPOINT:-}
TEXT_MODEL=${ECGFM_TEXT_MODEL:-}

say() { echo "init-bundle: $*" >&2; }
shout() { echo "!!! $*" >&2; }

has_bundle() { [ -f "$1/manifest.json" ]; }

is_untrained() {
  "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("untrained") else 1)' \
    "$1/manifest.json"
}

real_files_given() { [ -n "$CHECKPOINT" ] && [ -f "$CHECKPOINT" ] && [ -n "$TEXT_MODEL" ] && [ -d "$TEXT_MODEL" ]; }
source_bundle_given() { [ -n "$SOURCE_BUNDLE" ] && has_bundle "$SOURCE_BUNDLE"; }

warn_untrained() {
  shout ""
  shout "The model bundle in $TARGET is an UNTRAINED DEMO bundle: its outputs mean nothing clinically."
  shout "Every response from it carries \"untrained\": true and an untrained_model warning."
  shout "To serve the real model, provide the Zenodo checkpoint and the Bio_ClinicalBERT config/vocab"
  shout "(model_store/checkpoint.pt + model_store/text_model/) and run this again, or export yourself:"
  shout "  ecgfm-ked export --checkpoint CKPT --text-model DIR --out $TARGET --overwrite"
  shout ""
}

parent=$(dirname "$TARGET")
mkdir -p "$parent"
partial="$parent/.$(basename "$TARGET").partial-$$"
cleanup() { rm -rf "$partial"; }
trap cleanup EXIT

# Put the finished bundle in $partial in place of TARGET (an old TARGET, a demo bundle, goes).
install_partial() {
  has_bundle "$partial" || { say "no manifest.json in the built bundle; TARGET left as it was"; exit 1; }
  if [ -e "$TARGET" ]; then
    local old
    old="$parent/.$(basename "$TARGET").old-$$"
    mv "$TARGET" "$old"
    mv "$partial" "$TARGET"
    rm -rf "$old"
  else
    mv "$partial" "$TARGET"
  fi
}

# The whole run is one function, read in full before it starts (editing the file mid-run is safe).
main() {
  if has_bundle "$TARGET"; then
    if ! is_untrained "$TARGET"; then
      say "bundle already in $TARGET; nothing to do"
      exit 0
    fi
    if ! source_bundle_given && ! real_files_given; then
      say "demo bundle already in $TARGET; nothing to do"
      warn_untrained
      exit 0
    fi
    say "replacing the UNTRAINED demo bundle in $TARGET with the real model"
  elif [ -e "$TARGET" ] && [ -n "$(ls -A "$TARGET")" ]; then
    say "$TARGET exists, is not empty and holds no manifest.json: not a bundle; refusing to touch it"
    exit 1
  fi

  if source_bundle_given; then
    say "copying the bundle in $SOURCE_BUNDLE to $TARGET"
    cp -R "$SOURCE_BUNDLE" "$partial"
    install_partial
    exit 0
  fi

  if real_files_given; then
    say "exporting $CHECKPOINT with the text model in $TEXT_MODEL to $TARGET"
    "$CLI" export --checkpoint "$CHECKPOINT" --text-model "$TEXT_MODEL" --out "$partial"
    install_partial
    say "real ECGFM-KED bundle exported to $TARGET"
    exit 0
  fi

  if [ "${ECGFM_INIT_FETCH:-1}" != 0 ]; then
    say "no model files given; fetching the real weights (Zenodo 14881564 + Bio_ClinicalBERT)"
    if "$CLI" fetch --quiet --export-to "$partial"; then
      install_partial
      say "real ECGFM-KED bundle exported to $TARGET"
      exit 0
    fi
    rm -rf "$partial"
    shout ""
    shout "Could not fetch the real weights (see the message above)."
  fi

  if [ "${ECGFM_INIT_DEMO:-1}" = 0 ]; then
    say "no bundle in $TARGET, no model files, and ECGFM_INIT_DEMO=0 forbids the demo bundle"
    exit 1
  fi
  shout "Building an UNTRAINED DEMO bundle from random weights: its outputs mean nothing clinically."
  "$CLI" demo-bundle --out "$partial"
  install_partial
  warn_untrained
}

main
