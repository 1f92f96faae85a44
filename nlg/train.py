"""`nlg train` (also `python -m nlg.train`, `torchrun -m nlg.train`): fine-tune GPT-2 with a
method of nlg.methods on encoded pairs. The command's front: its flags are nlg.training.settings,
the run itself nlg.training.trainer; here the run's end is turned into an exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nlg.cli import prog_name, run_main
from nlg.files import Failure
from nlg.training.settings import parse_args
from nlg.training.trainer import NonFiniteLoss, Terminated, interrupted, stop_signals, train


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        with stop_signals():
            train(config)
    except NonFiniteLoss as error:
        raise Failure(f"non-finite training loss or gradient: {error}") from None
    except (KeyboardInterrupt, Terminated) as stop:
        # Unwound: checkpoints whole, lock released. One line, from rank 0 only (under torchrun
        # every rank gets the signal).
        message, code = interrupted(stop, Path(config.work_dir))
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"{prog_name(main)}: {message}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
