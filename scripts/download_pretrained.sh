#!/usr/bin/env bash
# Download a published GPT-2 checkpoint (config.json + model.safetensors) from huggingface.co.
# usage: scripts/download_pretrained.sh CARD DIR     CARD: gpt2.sm | gpt2.md | gpt2.lg
set -euo pipefail
card=${1:?usage: download_pretrained.sh CARD DIR}
dest=${2:?usage: download_pretrained.sh CARD DIR}
case "$card" in
  gpt2.sm) repo=openai-community/gpt2 ;;
  gpt2.md) repo=openai-community/gpt2-medium ;;
  gpt2.lg) repo=openai-community/gpt2-large ;;
  *) echo "download_pretrained.sh: no published checkpoint for card '$card'" >&2; exit 2 ;;
esac
base=${HF_ENDPOINT:-https://huggingface.co}/$repo/resolve/main
mkdir -p "$dest"
for file in config.json model.safetensors; do
  [ -s "$dest/$file" ] && continue
  echo "fetching $base/$file" >&2
  # Download to a temporary name so an interrupted transfer never looks like a checkpoint.
  if ! curl -fsSL --retry 2 --connect-timeout 20 -o "$dest/.$file.part" "$base/$file"; then
    rm -f "$dest/.$file.part"
    echo "download_pretrained.sh: could not fetch $base/$file (offline?)." >&2
    echo "  Copy a GPT-2 checkpoint there by hand, or set INIT_CHECKPOINT to a local one" >&2
    echo "  (a Hugging Face directory, or a file such as gpt2-medium-pytorch_model.bin)." >&2
    exit 1
  fi
  mv "$dest/.$file.part" "$dest/$file"
done
python - "$dest" "$card" <<'PY'
import sys
from nlg.weights import from_pretrained
from_pretrained(sys.argv[1], card=sys.argv[2])  # strict: every parameter present and shaped
print(f"{sys.argv[1]}: complete {sys.argv[2]} checkpoint")
PY
