"""Every command line shown in README.md and docs/*.md still parses, so none can go stale.

Where the commands come from:
- every line of a ```bash block (backslash continuations joined, `# comments` cut, `&&` chains
  split into their commands);
- every line of any other fenced block, or of the text, that starts with `nlg `, `scripts/`,
  `python -m nlg` or `torchrun`;
- every inline code span that starts with `nlg STAGE`, `python -m nlg` or `scripts/` (these
  are fragments: checked loosely, see below).

How each is checked:
- `nlg STAGE ARGS` (also `python -m nlg STAGE`, `python -m nlg.MODULE`, `python eval/*.py`,
  `python bench/*.py`): the stage's own main runs with argparse's parse_args intercepted, so
  its own parser (whatever it builds, however many phases) parses the line's arguments and
  nothing else runs. Placeholders (`FILE`, `DIR`, `checkpoint-N`, ...) are strings to every
  parser; `[ ]` around optional parts are dropped and `a|b|c` takes its first choice. A line
  with `...` (or `...words...`) is a fragment: it is checked loosely, with every argument made
  optional, so each flag it names must exist and each value it gives must be accepted.
- `scripts/reproduce.sh` / `scripts/e2e.sh`: the dataset, each flag (and the values of
  --method and --from) and each NAME= of the environment against what the script's --help
  says it accepts.
- `... --help` lines are run.
- the lines in EXEMPT are not run: each says why.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_START = r"(nlg [a-z-]|scripts/\S|python -m nlg|torchrun )"  # a line shown as a command

# Command lines that cannot be checked here, by how they start, with the reason.
EXEMPT = {
    "pip install": "installs packages (needs the network or a package index); not a command of this project",
    "python -m pytest": "runs the whole test suite, which this test is part of",
    "python -m nltk.downloader": "downloads NLTK data over the network",
    "apt-get": "installs a system package",
    "torchrun": "launches processes; its `...same flags as nlg train/beam...` are the stage's own, "
                "checked in that stage's lines (the -m module is checked to exist)",
    "bench/gpu_check.sh": "needs a CUDA GPU (--dry-run runs the whole check at toy size, minutes); "
                          "its options are checked against the script's text",
    "scripts/download_pretrained.sh": "downloads from huggingface.co; its card is checked against the script",
    "sbatch": "submits a job to a SLURM cluster; the job's scripts/reproduce.sh line is checked where shown",
}


@dataclass
class Command:
    file: Path
    line: int
    text: str
    fragment: bool  # an inline span: flags and values checked, nothing required

    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.text}"


def split_chain(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\s&&\s|\s;\s", text) if part.strip()]


def commands_of(path: Path) -> list[Command]:
    found: list[Command] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    fence: str | None = None  # the language of the open fence, "" for a bare one
    pending, start = "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence == "bash":
            line = re.sub(r"\s+", " ", line) if pending else line
            if not pending:
                start = number
            text = line.rstrip()
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            text = pending + text
            pending = ""
            text = strip_comment(text).strip()
            if text:
                found += [Command(path, start, part, False) for part in split_chain(text)]
            continue
        if fence is not None:  # another block (output, a layout): its lines shown as commands
            if re.match(COMMAND_START, stripped):
                found.append(Command(path, number, strip_comment(stripped), False))
            continue
        # text: inline code spans; in the README's tables (one command per stage) whole commands
        whole = path.name == "README.md" and stripped.startswith("|")
        for span in re.findall(r"`([^`]+)`", line):
            if re.match(r"(nlg [a-z]+|python -m nlg|scripts/\S+\.sh)(\s|$)", span) and not is_message(span):
                found.append(Command(path, number, span, not (whole and len(span.split()) > 2)))
    return found


def is_message(span: str) -> bool:
    """`nlg train (rank R/N): error: ...`, `nlg select: error: ...`: a message, not a command."""
    return bool(re.match(r"nlg [a-z]+( \(rank [^)]*\))?:", span))


def strip_comment(text: str) -> str:
    """Cut a `# comment` that is not inside quotes."""
    quote = None
    for i, char in enumerate(text):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


ALL = [command for path in DOCS for command in commands_of(path)]


def exemption(command: Command) -> str | None:
    words = command.text
    while re.match(r"[A-Z_][A-Z0-9_]*=\S*\s", words):  # NAME=value prefixes
        words = words.split(None, 1)[1]
    for start, reason in EXEMPT.items():
        if words.startswith(start):
            return reason
    return None


# ---- intercepting a stage's own parser ------------------------------------------------------

class Parsed(Exception):
    pass


# Words the docs write for a value chosen from a list (`nlg recipe DATASET --method NAME`):
# every parser accepts them where it has choices.
PLACEHOLDERS = ("DATASET", "NAME", "METHOD", "STAGE", "CARD", "X")


def tokens_of(text: str) -> tuple[list[str], bool]:
    """The line's words with the doc's notation removed, and whether it is a fragment."""
    fragment = "..." in text
    text = re.sub(r"\.\.\.[^.\s][^.]*?\.\.\.", " ", text)  # ...the recipe's beam flags...
    words = []
    for word in shlex.split(text):
        if word == "...":
            continue
        word = word.strip("[]")
        if not word or word == "|":
            continue
        if "|" in word and not word.startswith("-") and "=" not in word:
            word = word.split("|")[0]  # e2e|webnlg|dart: the first choice
        elif word.startswith("-") and "|" in word:
            word = word.split("|")[0]
        words.append(word)
    return words, fragment


@contextlib.contextmanager
def intercepted(loose: bool):
    """parse_args parses (with every argument optional when `loose`) and then stops the run."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        for action in self._actions:
            if action.choices is not None and not isinstance(action.choices, dict):
                action.choices = [*action.choices, *PLACEHOLDERS]
            if loose:
                action.required = False
                takes_value = isinstance(action, (argparse._StoreAction, argparse._AppendAction))
                if action.nargs is None and (takes_value or not action.option_strings):
                    action.nargs = "?"
                elif action.nargs == "+":
                    action.nargs = "*"
        if loose:
            for group in self._mutually_exclusive_groups:
                group.required = False
        original(self, args, namespace)
        raise Parsed

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def parse_with(run, command: Command, loose: bool) -> None:
    """Run `run()` (a stage's main on the line's arguments) until its parser has parsed."""
    err = io.StringIO()
    problem = "ran without reaching its argument parser"
    try:
        with intercepted(loose), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            run()
    except Parsed:
        return
    except SystemExit as exit_:
        message = err.getvalue().strip().splitlines()[-1:] or [f"exit {exit_.code}"]
        problem = f"no longer parses: {message[0]}"
    pytest.fail(f"{command}\n  {problem}", pytrace=False)


def stage_main(stage: str, command: Command):
    from nlg.cli import COMMANDS

    if stage not in COMMANDS:
        pytest.fail(f"{command}\n  `nlg {stage}` is not a command (nlg --help lists {', '.join(COMMANDS)})",
                    pytrace=False)
    return importlib.import_module(COMMANDS[stage][0]).main


def check_nlg(command: Command, words: list[str], loose: bool) -> None:
    if not words:
        return
    if words[0] in ("-h", "--help", "-V", "--version"):
        run_help(command, [sys.executable, "-m", "nlg", *words])
        return
    main = stage_main(words[0], command)
    if "-h" in words or "--help" in words:
        run_help(command, [sys.executable, "-m", "nlg", *words])
        return
    parse_with(lambda: main(words[1:]), command, loose)


def check_module(command: Command, module: str, words: list[str], loose: bool) -> None:
    from nlg.cli import COMMANDS

    stages = {mod: stage for stage, (mod, _) in COMMANDS.items()}
    if module in stages:
        check_nlg(command, [stages[module], *words], loose)
        return
    try:
        main = importlib.import_module(module).main
    except (ImportError, AttributeError):
        pytest.fail(f"{command}\n  {module} is not a module with a main()", pytrace=False)
    parse_with(lambda: main(words), command, loose)


def check_script(command: Command, script: str, words: list[str], loose: bool) -> None:
    path = ROOT / script
    if not path.is_file():
        pytest.fail(f"{command}\n  {script} does not exist", pytrace=False)
    source = path.read_text(encoding="utf-8")
    if "argparse" not in source and "run_main" not in source:  # would run, not parse
        pytest.fail(f"{command}\n  {script} has no argument parser to check the line with", pytrace=False)

    def run():
        saved = sys.argv
        sys.argv = [str(path), *words]
        try:
            runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.argv = saved

    if "-h" in words or "--help" in words:
        run_help(command, [sys.executable, str(path), *words])
        return
    parse_with(run, command, loose)


def run_help(command: Command, argv: list[str]) -> None:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env_with_root())
    if result.returncode != 0:
        pytest.fail(f"{command}\n  exit {result.returncode}: {result.stderr.strip()[-300:]}", pytrace=False)


def env_with_root() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


# ---- scripts/reproduce.sh ------------------------------------------------------------------

@cache
def reproduce_help() -> str:
    result = subprocess.run(["bash", str(ROOT / "scripts/reproduce.sh"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=env_with_root())
    assert result.returncode == 0, result.stderr
    return result.stdout


def reproduce_accepts() -> tuple[set[str], dict[str, bool], set[str], set[str]]:
    """Datasets, flags (-> takes a value), environment names, stages, from its --help."""
    text = reproduce_help()
    usage = text.split("\n\n")[0]
    listed = re.search(r"DATASET:\s*([^\n]+)", usage)
    if listed:
        datasets = set(re.findall(r"[a-z0-9]+", listed.group(1)))
    else:
        from nlg import datasets as registry

        datasets = set(registry.names())
    flags = {flag: bool(value) for flag, value in re.findall(r"\[(--[a-z-]+)(?: ([A-Z]+))?\]", usage)}
    assert flags, f"scripts/reproduce.sh --help: no [--flag] in its usage line:\n{usage}"
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)(?==)", text))
    names |= set(re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s", text, re.M))  # the recipe's NAME column
    stages_line = re.search(r"--from STAGE\s+redo STAGE \(([^)]*)\)", text)
    stages = set(re.findall(r"[a-z]+", stages_line.group(1))) if stages_line else set()
    return datasets, flags, names, stages


def check_reproduce(command: Command, script: str, env: list[str], words: list[str]) -> None:
    datasets, flags, names, stages = reproduce_accepts()
    problems = [f"{name}= is not a setting of reproduce.sh (see its --help)"
                for name in env if name not in names and name not in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")]
    if script.endswith("e2e.sh"):
        words = ["e2e", *words]
    if "--help" in words:
        run_help(command, ["bash", str(ROOT / script), "--help"])
        return
    from nlg import methods

    i = 0
    positional = []
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            if word not in flags:
                problems.append(f"{word} is not a flag of reproduce.sh (it takes {', '.join(flags)})")
            elif flags[word]:
                value = words[i + 1] if i + 1 < len(words) else None
                i += 1
                if value is None:
                    problems.append(f"{word} needs a value")
                elif word == "--from" and value != "STAGE" and stages and value not in stages:
                    problems.append(f"--from {value}: not a stage ({', '.join(sorted(stages))})")
                elif word == "--method" and value not in ("NAME",) and value not in methods.names():
                    problems.append(f"--method {value}: not a method")
                elif word == "--seeds" and value != "N" and not value.isdigit():
                    problems.append(f"--seeds {value}: not a whole number")
        else:
            positional.append(word)
        i += 1
    if positional and positional[0] not in datasets and positional[0] != "DATASET":
        problems.append(f"{positional[0]} is not a dataset of reproduce.sh ({', '.join(sorted(datasets))})")
    if len(positional) > 1:
        problems.append(f"unexpected arguments {positional[1:]}")
    if "--sweep" in words and not problems:
        problems += sweep_problems(words)
    if problems:
        pytest.fail(f"{command}\n  " + "; ".join(problems), pytrace=False)


def sweep_problems(words: list[str]) -> list[str]:
    """A sweep's settings and values as reproduce.sh checks them before any work (nlg.pipeline.sweep)."""
    from nlg.pipeline.chain import parse_args
    from nlg.pipeline.settings import Refusal, resolve
    from nlg.pipeline.sweep import parse_axes

    try:
        args = parse_args(words)
        settings = resolve(args.dataset, {"NPROC": "1"}, demo=args.demo, method_flag=args.method,
                           seed_count=args.seeds)
        parse_axes(args.sweep, settings)
    except Refusal as error:
        return [f"reproduce.sh refuses it: {error}"]
    return []


# ---- the dispatch -------------------------------------------------------------------------

def check(command: Command) -> None:
    if exemption(command):
        check_exempt(command)
        return
    if command.text.startswith("python -c "):
        from nlg.methods.top_layers import REBUILD

        assert command.text == REBUILD, f"{command}\n  is not nlg.methods.top_layers.REBUILD"
        return
    words, fragment = tokens_of(command.text)
    loose = fragment or command.fragment
    env = []
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        env.append(words.pop(0).split("=")[0])
    if not words:
        return
    head = words[0]
    if head == "nlg":
        check_nlg(command, words[1:], loose)
    elif head == "python" and words[1:2] == ["-m"]:
        module = words[2]
        if module == "nlg":
            check_nlg(command, words[3:], loose)
        else:
            check_module(command, module, words[3:], loose)
    elif head == "python" and len(words) > 1 and words[1].endswith(".py"):
        check_script(command, words[1], words[2:], loose)
    elif head in ("scripts/reproduce.sh", "scripts/e2e.sh"):
        check_reproduce(command, head, env, words[1:])
    else:
        pytest.fail(f"{command}\n  a command line this test does not know how to check: "
                    "check it here or list it in EXEMPT with the reason", pytrace=False)


def check_exempt(command: Command) -> None:
    """What can be checked of an exempt line without running it."""
    words, _ = tokens_of(command.text)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words.pop(0)
    if words[:1] == ["torchrun"] and "-m" in words:
        module = words[words.index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, f"{command}\n  no module {module}"
    elif words[:1] == ["bench/gpu_check.sh"]:
        text = (ROOT / "bench/gpu_check.sh").read_text(encoding="utf-8")
        for word in words[1:]:
            if word.startswith("--"):
                assert word in text, f"{command}\n  {word} is not an option of bench/gpu_check.sh"
    elif words[:1] == ["scripts/download_pretrained.sh"] and len(words) > 1:
        text = (ROOT / "scripts/download_pretrained.sh").read_text(encoding="utf-8")
        assert words[1] == "CARD" or f"{words[1]})" in text, f"{command}\n  no card {words[1]}"


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("command", ALL, ids=[c.where() for c in ALL])
def test_command_line_parses(command):
    check(command)


def test_commands_were_found():
    """The extraction finds what the docs show (a broken fence would hide every command)."""
    by_file = {path.name: sum(c.file == path for c in ALL) for path in DOCS}
    assert by_file["README.md"] >= 8, by_file
    assert by_file["stages.md"] >= 20, by_file
    assert any(c.text.startswith("scripts/reproduce.sh") for c in ALL)


def test_set_up_is_two_commands():
    """The README's Set up holds exactly two commands: the main job and the test command."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert [block.strip() for block in blocks][1:] == ["pip install -e '.[test]' && python -m pytest -q"]
    assert len(blocks) == 2 and blocks[0].strip().endswith("scripts/reproduce.sh webnlg --demo"), blocks
    assert blocks[0].startswith("pip install torch==2.13.0 && ")


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines: the reference belongs in docs/"


def test_links_into_docs_resolve():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).is_file(), f"{path.relative_to(ROOT)}: link to {target}"
