#!/usr/bin/env bash
# The E2E experiment of the LoRA paper: `scripts/reproduce.sh e2e`, kept under its old name.
# Same options and settings (scripts/reproduce.sh --help); the demo's run directory is now
# runs/e2e-demo.
exec "$(dirname "$0")/reproduce.sh" e2e "$@"
