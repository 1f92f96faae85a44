"""`python -m nlg.pipeline`: the helpers of scripts/reproduce.sh (nlg.pipeline.main)."""

import sys

from nlg.cli import run_main
from nlg.pipeline import main

sys.exit(run_main(main, prog="reproduce.sh"))
