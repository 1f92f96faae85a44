"""The `nlg` command: one subcommand per pipeline stage.

Each stage module exposes `main(argv) -> int` with its own argument parser. The
modules are imported only when their subcommand runs, so `nlg score` never pays
for (or needs) torch.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Callable

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("nlg.data", "encode a raw dataset (e2e, webnlg, dart) into jsonl files"),
    "train": ("nlg.train", "fine-tune GPT-2 by a method of nlg.methods (--method; torchrun for several processes)"),
    "beam": ("nlg.beam", "beam-search generation for every distinct context"),
    "decode": ("nlg.decode", "turn predictions into reference/prediction text files"),
    "score": (
        "nlg.score",
        "score outputs as the E2E challenge (BLEU, NIST, ...) or GenerationEval (WebNLG, DART)",
    ),
    "compare": (
        "nlg.compare",
        "bootstrap intervals of scores and a paired bootstrap test of two systems",
    ),
    "recipe": ("nlg.datasets.recipe", "the paper's settings for a dataset, as the pipeline script reads them"),
    "results": ("nlg.results", "a run's scores beside the paper's: results.md and results.json"),
    "select": ("nlg.select", "choose the checkpoint to decode by validation (last, loss or a metric)"),
    "analyze": ("nlg.methods.lora.analyze", "spectral analysis of a LoRA adapter"),
    "plot": ("nlg.results.plot", "plot training/validation loss curves from a run's metrics log"),
    "reproduce": ("nlg.pipeline.chain", "the whole pipeline for a dataset, data to results (scripts/reproduce.sh)"),
}

# Packages of the `train` extra; scoring, data and decoding run without them.
TRAIN_EXTRA = ("torch", "safetensors")
TRAIN_HELP = (
    "install PyTorch in the build that fits your machine (e.g. `pip install torch`, or the CPU "
    "wheel), then the training extra: `pip install 'nlg[train]'` (from a checkout: "
    "`pip install -e '.[train]'`)"
)


def spellings(name: str) -> list[str]:
    """Both spellings of a long flag, so the paper's `--train_data` and `--train-data` both work.

    >>> spellings("train_data")
    ['--train_data', '--train-data']
    """
    underscored = "--" + name.replace("-", "_")
    dashed = "--" + name.replace("_", "-")
    return [underscored] if underscored == dashed else [underscored, dashed]


def show_progress(wanted: bool = True, stream=None) -> bool:
    """Whether a stage draws its progress bar: when `wanted` (beam's --no_progress says not)
    and `stream` (default stderr, where bars go) is a terminal; a log file or a pipe gets none.

    >>> import io
    >>> show_progress(stream=io.StringIO())
    False
    """
    stream = sys.stderr if stream is None else stream
    try:
        return wanted and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# Operating-system failures that are the machine's state, not a bug: one line, no traceback.
# With a file name, any OSError is one (no permission, a folder where a file goes, ...); these
# also without one (a failed write() names no file).
EXPECTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO,
                             errno.EACCES, errno.EPERM})


def prog_name(stage_main: Callable) -> str:
    """`nlg score` for nlg.score's main, also under `python -m nlg.score` and torchrun (where
    the module is __main__); the script's file name for eval/*.py."""
    module = stage_main.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else os.path.basename(sys.argv[0])
    return module.replace("nlg.", "nlg ", 1) if module.startswith("nlg.") else module


def fail(prog: str, message: str, code: int) -> int:
    """Print `PROG: error: MESSAGE` (argparse's form) on one line of stderr; returns `code`.
    Under torchrun each rank prints its own line, so the rank is named."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    where = f"{prog} (rank {os.environ.get('RANK', 0)}/{world_size})" if world_size > 1 else prog
    print(f"{where}: error: {message}", file=sys.stderr)
    return code


def os_error_message(error: OSError) -> str:
    """`FILE: reason` of an operating-system failure (`reason` as the OS words it)."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename is not None else reason


def run_main(stage_main: Callable[[list[str] | None], int], argv: list[str] | None = None,
             prog: str | None = None) -> int:
    """Run a stage's main; the failures a user can meet become one line on stderr, never a
    traceback: bad input (InputError) exits 2; an operating-system failure (no space, no
    permission, a folder where a file goes, ...) and any other expected Failure exit 1. Every entry point (`nlg STAGE`,
    `python -m nlg.STAGE`, torchrun, eval/*.py) goes through here."""
    from nlg.files import Failure, InputError

    prog = prog or prog_name(stage_main)
    try:
        return int(stage_main(argv) or 0)
    except InputError as error:
        return fail(prog, str(error), 2)
    except Failure as error:
        return fail(prog, str(error), 1)
    except OSError as error:
        if error.filename is None and error.errno not in EXPECTED_ERRNOS:
            raise  # not the machine's state: a bug, keep its traceback
        return fail(prog, os_error_message(error), 1)


def usage() -> str:
    lines = ["usage: nlg COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `nlg COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from nlg import __version__

        print(f"nlg {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        print(f"nlg: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as error:
        if error.name not in TRAIN_EXTRA:
            raise
        print(
            f"nlg {name} needs {error.name}, which is not installed: {TRAIN_HELP}", file=sys.stderr
        )
        return 2
    return run_main(module.main, args[1:], prog=f"nlg {name}")


if __name__ == "__main__":
    sys.exit(main())
