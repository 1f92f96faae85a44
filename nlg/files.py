"""File helpers shared by every stage: atomic writes, line-numbered reads, guarded outputs.

Stages talk to each other through files, so a half-written file is a silent bug
in the next stage. Everything is written to a temporary name in the target's
directory and renamed into place (atomic on POSIX), and every read error names
`FILE:LINE`. An operating-system failure while writing (a full disk, no permission)
is raised as an OSError naming the file the caller asked for, never the temporary one.

    check_outputs(inputs, outputs, ...)   before any work: no output over an input or
                                          another output, every output writable as asked
    read_lines / read_jsonl / read_text   UTF-8 text; a leading byte-order mark is removed
                                          (with a note on stderr), bad bytes name FILE:LINE
    parse_json / read_json / read_jsonl   JSON within limits (depth, digits, no lone
                                          surrogates): every problem names FILE:LINE
    write_manifest / verify_manifest      a folder's files with their sizes and SHA-256
    lock_file                             an exclusive lock held while the process lives
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

PathArg = str | os.PathLike
Paths = PathArg | Iterable[PathArg] | None  # one path, several, or none (a flag not given)


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


class Failure(RuntimeError):
    """An expected failure that is not the input's fault (a non-finite training loss, Java
    failing under the scorer): `nlg.cli.run_main` prints it on one line and exits 1."""


def _naming(error: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """`error` about `path`: an error without a file name (a failed write() has none), or one
    about the temporary name `tmp` (or a file inside it), is re-made to name `path` instead."""
    name = error.filename
    if name is not None and (tmp is None or not (name == str(tmp) or name.startswith(f"{tmp}{os.sep}"))):
        return error
    where = path if name is None or name == str(tmp) else path / os.path.relpath(name, tmp)
    return OSError(error.errno, error.strerror, str(where))  # the errno's subclass, e.g. IsADirectoryError


def _raise_naming(error: OSError, path: Path, tmp: Path | None) -> None:
    renamed = _naming(error, path, tmp)
    if renamed is error:
        raise error
    raise renamed from error


@contextlib.contextmanager
def atomic_files() -> Iterator[Callable[..., IO]]:
    """Several files written as one: `open_file(path, mode="w", encoding="utf-8")` gives a
    handle on a temporary file beside `path`. When the block succeeds every file is flushed and
    fsynced, and only then are all renamed into place; a failure anywhere (a full disk while
    writing the last one) removes every temporary file, so all targets keep what they held.

    An OSError names the target it concerns: the file being opened, synced or renamed, or, for
    a write() in the block (which names no file), the file opened last."""
    pending: list[tuple[Path, Path, IO]] = []  # (temporary, target, handle)
    target: list[Path] = []  # the file being worked on, for an error that names none

    def open_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> IO:
        path = Path(path)
        target[:] = [path]
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as error:  # it names the temporary file it tried to make
            raise OSError(error.errno, error.strerror, str(path)) from error
        handle = os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)
        pending.append((Path(tmp), path, handle))
        os.fchmod(fd, _default_mode())
        return handle

    try:
        yield open_file
        for _, path, handle in pending:
            target[:] = [path]
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for tmp, path, _ in pending:
            target[:] = [path]
            os.replace(tmp, path)
    except BaseException as error:
        for tmp, _, handle in pending:
            with contextlib.suppress(OSError):  # closing flushes what a full disk refused again
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(error, OSError) and target:
            temporary = {str(tmp): path for tmp, path, _ in pending}
            path = temporary.get(error.filename, target[0])
            _raise_naming(error, path, next((t for t, p, _ in pending if p == path), None))
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to `path`; rename it onto `path` only on success.

    An OSError on the way (no space, no permission, `path` a folder) names `path`."""
    with atomic_files() as open_file:
        yield open_file(path, mode, encoding)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it becomes `path` only on success.

    An existing `path` is replaced. A kill at any moment leaves either the old
    directory or the new one, never a partial one under the final name; an exception at any
    moment (nlg train raises Ctrl-C and SIGTERM as exceptions) also leaves no temporary
    directory behind and the old `path` in place. An OSError about the temporary directory or
    a file in it names `path` (or that file in `path`).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkdtemp: its name is known only once it returns, so an exception a signal
        # handler raised between its return and the assignment leaked the directory. Here the
        # name is remembered before the directory exists (64 random bits: never another's).
        while tmp is None:
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
            try:
                tmp.mkdir(mode=0o700)
            except FileExistsError:
                tmp = None
        with _replacing_dir(path, tmp) as folder:
            yield folder
    except BaseException as error:
        if tmp is not None:  # after a swap tmp is gone: nothing to remove
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            _raise_naming(error, path, tmp)
        raise


@contextlib.contextmanager
def _replacing_dir(path: Path, tmp: Path) -> Iterator[Path]:
    """atomic_dir's body: fill `tmp`, then swap it in for `path`; `tmp` goes on failure, and an
    exception between the swap's two renames puts the old directory back."""
    old = path.with_name(f".{path.name}.old")
    moved = False
    try:
        tmp.chmod(_default_mode(directory=True))
        yield tmp
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            moved = True
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if moved and not path.exists() and old.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


T = TypeVar("T", str, bytes)


def strip_bom(text: T, source: str | os.PathLike) -> T:
    """`text` without a UTF-8 byte-order mark at its start, saying so on stderr.

    Editors on Windows add one; left in, it becomes part of the first reference, prediction
    or meaning representation (a different text, different scores)."""
    mark = codecs.BOM_UTF8 if isinstance(text, bytes) else "\ufeff"
    if not text.startswith(mark):
        return text
    print(f"note: {source}: removed the UTF-8 byte-order mark at its start", file=sys.stderr)
    return text[len(mark):]


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file without their line endings; bad bytes -> FILE:LINE error.
    A byte-order mark at the start is removed (`strip_bom`)."""
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
    if lines:
        lines[0] = strip_bom(lines[0], path)
    return lines


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 text file (e.g. a JSON file); bad bytes name FILE:LINE, a byte-order mark
    at the start is removed (`strip_bom`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return strip_bom(text, path)


# ---------------------------------------------------------------------------------------------
# JSON within limits
# ---------------------------------------------------------------------------------------------
# Python's json module recurses once per nesting level and int() refuses more than
# sys.get_int_max_str_digits() digits, so a deeply nested document or a 5,000-digit number
# would end a stage with a RecursionError or ValueError traceback. Every JSON input goes
# through `parse_json`, which turns both into one InputError line, as it does syntax errors.
# It also refuses a lone UTF-16 surrogate escape (`"\ud800"`): json accepts it, but the
# string it makes is not text and fails later, when it is written as UTF-8.

JSON_MAX_DEPTH = 100  # nesting levels; every file the stages read has fewer than 10
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
# a \uD800-\uDFFF escape that is not itself escaped (an odd number of backslashes before u)
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*(?P<escape>\\u(?P<hex>[dD][89a-fA-F][0-9a-fA-F]{2}))")


def _deeper_than(text: str, limit: int) -> int | None:
    """Where `text` first nests deeper than `limit` arrays/objects (an index), else None.

    Fast path, at C speed: with strings and everything but brackets removed, each pass that
    deletes the innermost `[]`/`{}` pairs peels one level, so at most `limit` + 1 passes
    decide. Only a document that is too deep or unbalanced is scanned token by token."""
    if text.count("[") + text.count("{") <= limit:
        return None
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(limit + 1):
        if not brackets:
            return None
        peeled = _EMPTY_PAIR.sub("", brackets)
        if peeled == brackets:
            break  # unbalanced: not valid JSON, but it may still be too deep to parse
        brackets = peeled
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        if token[0] in "[{":
            depth += 1
            if depth > limit:
                return token.start()
        elif token[0] in "]}":
            depth -= 1
    return None


def _lone_surrogate(text: str) -> re.Match | None:
    """The first `\\uD800`-`\\uDFFF` escape of `text` that is not half of a high-low pair."""
    if not _SURROGATE_HINT.search(text):
        return None
    escapes = list(_SURROGATE_ESCAPE.finditer(text))
    index = 0
    while index < len(escapes):
        high = escapes[index]
        following = escapes[index + 1] if index + 1 < len(escapes) else None
        if int(high["hex"], 16) >= 0xDC00 or following is None \
                or following.start("escape") != high.end() or int(following["hex"], 16) < 0xDC00:
            return high
        index += 2
    return None


def parse_json(text: str, source: str | os.PathLike, line: int | None = None) -> Any:
    """The JSON value in `text`: a whole document read from `source`, or line `line` of the
    JSON-lines file `source`. Raises InputError naming `source` and the line (the document's
    line where the problem lies) for a syntax error, nesting deeper than JSON_MAX_DEPTH, an
    integer longer than Python's int limit (sys.get_int_max_str_digits(), 4300 digits), or a
    lone surrogate escape."""

    def where(position: int | None = None) -> str:
        at = line if line is not None else text.count("\n", 0, position or 0) + 1
        return f"{source}:{at}"

    deep = _deeper_than(text, JSON_MAX_DEPTH)
    if deep is not None:
        raise InputError(f"{where(deep)}: JSON nested more than {JSON_MAX_DEPTH} levels deep")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        at = f"{source}:{line}" if line is not None else f"{source}:{error.lineno}"
        raise InputError(f"{at}: not valid JSON ({error.msg})") from None
    except ValueError:  # the only other ValueError json raises: an integer over int's limit
        limit = sys.get_int_max_str_digits()
        long_number = re.search(rf"[0-9]{{{limit + 1},}}", text)
        raise InputError(f"{where(long_number.start() if long_number else None)}: a number with "
                         f"more than {limit} digits (Python's limit for integers)") from None
    surrogate = _lone_surrogate(text)
    if surrogate is not None:
        raise InputError(f"{where(surrogate.start())}: {surrogate['escape']} is a lone UTF-16 surrogate (half of "
                         "a pair), not a character; the text cannot be written as UTF-8")
    return value


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file (`read_text`, then `parse_json`): every problem is an InputError naming
    FILE:LINE."""
    return parse_json(read_text(path), path)


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, object) for every non-blank line of a JSON-lines file (`parse_json`)."""
    return [(number, parse_json(line, path, number))
            for number, line in enumerate(read_lines(path), start=1) if line.strip()]


def json_line(record: Any) -> str:
    """One record of a JSON-lines file, as every stage writes it (UTF-8 kept, newline ended)."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def write_jsonl(path: str | os.PathLike, records: list[Any]) -> None:
    """Write one compact JSON object per line, atomically."""
    with atomic_write(path) as handle:
        handle.writelines(json_line(record) for record in records)


# ---------------------------------------------------------------------------------------------
# Outputs never over inputs
# ---------------------------------------------------------------------------------------------


def _paths(value: Paths) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value if v is not None]


def _flagged(named: Mapping[str, Paths] | None) -> list[tuple[str, Path]]:
    return [(flag, path) for flag, value in (named or {}).items() for path in _paths(value)]


def _same(a: Path, b: Path) -> bool:
    """One file under two names: the same path through links, or hard links of one file."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _within(inner: Path, folder: Path) -> bool:
    """`inner` is `folder` or lies inside it (through links)."""
    inner_real, folder_real = os.path.realpath(inner), os.path.realpath(folder)
    return inner_real == folder_real or inner_real.startswith(folder_real.rstrip(os.sep) + os.sep)


def _resolved(a: Path, b: Path) -> str:
    """' (both are REAL)' when two different spellings name one file, for the message."""
    if os.path.abspath(a) == os.path.abspath(b):
        return ""
    return f" (both are {os.path.realpath(a)})"


def _unwritable(path: Path) -> str | None:
    """Why `path` could not be created or replaced (None when it could): its nearest existing
    folder must be a folder we may write in. Checked before the work, not after hours of it."""
    for ancestor in Path(os.path.abspath(path)).parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"no permission to write in {ancestor}"
            return None
    return None


def check_outputs(inputs: Mapping[str, Paths], outputs: Mapping[str, Paths],
                  folders: Mapping[str, Paths] | None = None,
                  replaced: Mapping[str, Paths] | None = None) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other.

    Each mapping is {flag as the user typed it (e.g. "--output_file", "REF"): path or paths}.
      inputs    files the command reads (a folder read as a whole counts as a whole)
      outputs   files it writes (replaced by a rename)
      folders   folders it writes files into (created when missing)
      replaced  folders it replaces as a whole: everything inside them is lost
    Paths are compared through symbolic links (realpath) and hard links (samefile). An output
    file must not be an existing folder, a folder output not an existing file, and each must
    lie where we may write. Raises InputError with one line naming both flags.
    """
    ins, files = _flagged(inputs), _flagged(outputs)
    into, whole = _flagged(folders), _flagged(replaced)
    for flag, path in into + whole:  # first: output files may lie in them
        if path.exists() and not path.is_dir():
            raise InputError(f"{flag} {path}: is a file; give a folder")
        problem = _unwritable(path / "_")
        if problem:
            raise InputError(f"{flag} {path}: cannot write there: {problem}")
    for flag, path in files:
        if path.is_dir():
            raise InputError(f"{flag} {path}: is a folder; give a file name")
        problem = _unwritable(path)
        if problem:
            raise InputError(f"{flag} {path}: cannot write there: {problem}")
    written = [(flag, path, False) for flag, path in files] + [(flag, path, True) for flag, path in whole]
    for index, (flag, path, is_whole) in enumerate(written):
        for in_flag, source in ins:
            if _same(path, source):
                raise InputError(f"{flag} {path}: is the input {in_flag} {source}{_resolved(path, source)}; "
                                 "refusing to write over it")
            if is_whole and _within(source, path):
                raise InputError(f"{flag} {path}: this folder is replaced as a whole, and the input "
                                 f"{in_flag} {source} is inside it")
        for other_flag, other, other_whole in written[index + 1:]:
            if _same(path, other):
                raise InputError(f"{other_flag} {other}: is also {flag} {path}{_resolved(path, other)}; "
                                 "give each output its own name")
            for (a_flag, a), (b_flag, b), b_whole in (((flag, path), (other_flag, other), other_whole),
                                                     ((other_flag, other), (flag, path), is_whole)):
                if b_whole and _within(a, b):
                    raise InputError(f"{a_flag} {a}: inside {b_flag} {b}, which is replaced as a whole")


# ---------------------------------------------------------------------------------------------
# Manifests: a folder's files, verified
# ---------------------------------------------------------------------------------------------

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_identity(path: str | os.PathLike) -> dict[str, int | str]:
    """{"bytes": N, "sha256": HEX} of a file: the one identity every recorded input has
    (checkpoint manifests, training states, method.json's base model, pipeline stage records).
    Two files are the same input when both values are equal, wherever they lie."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def write_manifest(folder: str | os.PathLike) -> Path:
    """FOLDER/manifest.json, the size and SHA-256 of every other file directly in FOLDER::

        {"format": 1, "files": {"NAME": {"bytes": N, "sha256": "HEX"}, ...}}

    Write it last: a folder whose files all match its manifest was written completely, and
    nothing in it has changed since (a cut-short copy, a disk error, an edit)."""
    folder = Path(folder)
    files = {path.name: file_identity(path)
             for path in sorted(folder.iterdir()) if path.is_file() and path.name != MANIFEST}
    with atomic_write(folder / MANIFEST) as handle:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, handle, indent=1)
        handle.write("\n")
    return folder / MANIFEST


def verify_manifest(folder: str | os.PathLike, names: Iterable[str] | None = None) -> bool:
    """Check FOLDER's files (only `names`, when given) against its manifest.json.

    Returns False when the folder has no manifest (nothing to check against), True when every
    file matches; raises InputError naming the first file that is missing, has another size
    or another SHA-256, or the manifest itself when it cannot be read."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return False
    try:
        listed = read_json(path)["files"]
        expected = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in listed.items()}
    except (InputError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{path}: not a readable manifest ({error})") from None
    for name in expected if names is None else names:
        file = folder / name
        if name not in expected:
            raise InputError(f"{file}: not listed in {path}")
        size, digest = expected[name]
        if not file.is_file():
            raise InputError(f"{file}: missing, but listed in {MANIFEST}")
        if file.stat().st_size != size:
            raise InputError(f"{file}: {file.stat().st_size} bytes, {MANIFEST} says {size} (cut short or changed)")
        if sha256_file(file) != digest:
            raise InputError(f"{file}: contents differ from {MANIFEST} (SHA-256 mismatch: corrupt or changed)")
    return True


# ---------------------------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------------------------


class Locked(InputError):
    """Another process holds the lock; `holder` says which ("process PID on HOST")."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path}: locked by {holder}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def lock_file(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock (flock) on `path`, created if missing, while the block runs.

    The kernel drops the lock when the process ends, however it ends (kill -9 included), so
    a stale lock cannot outlive its run. The holder's process id and host are written into
    the file for the message another process gets (`Locked`). The file itself stays.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _default_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text(errors="replace").split()
            holder = f"process {text[0]} on {text[1]}" if len(text) >= 2 else "another process"
            raise Locked(path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        os.close(fd)
