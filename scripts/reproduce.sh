#!/usr/bin/env bash
# The LoRA paper's GPT-2 experiments on E2E, WebNLG 2017 and DART, end to end:
# data -> train -> beam -> decode -> score. Run `scripts/reproduce.sh --help` for every setting.
# The chain is `nlg reproduce` (nlg/pipeline/): this front runs it from the repository's root,
# where its default paths (runs/, data/, pretrained/) lie, through NLG (default python -m nlg).
set -euo pipefail
cd "$(dirname "$0")/.."
exec ${NLG:-python -m nlg} reproduce "$@"
