"""File helpers shared by every stage: atomic writes and line-numbered reads.

Stages talk to each other through files, so a half-written file is a silent bug
in the next stage. Everything is written to a temporary name in the target's
directory and renamed into place (atomic on POSIX), and every read error names
`FILE:LINE`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    # Linux reports the umask without changing it; elsewhere set-and-restore (not thread-safe).
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(directory: bool = False) -> int:
    """Permissions a plain open()/mkdir() would give (mkstemp/mkdtemp use 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


class InputError(ValueError):
    """Bad input file; the message starts with `FILE:LINE:` where a line is known."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it becomes `path` only on success.

    An existing `path` is replaced. A kill at any moment leaves either the old
    directory or the new one, never a partial one under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(_default_mode(directory=True))
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file without their line endings; bad bytes -> FILE:LINE error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
            lines.append(text.rstrip("\r\n"))
    return lines


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    records = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return records


def write_jsonl(path: str | os.PathLike, records: list[Any]) -> None:
    """Write one compact JSON object per line, atomically."""
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")
