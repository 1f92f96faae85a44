"""Fetch a dataset's raw files: all or nothing, and only what parses.

Every file is downloaded and checked with the dataset's own reader before any is written,
so an error page, a truncated transfer or a failed file leaves the raw folder as it was;
each file is then written atomically. urllib is enough here: a handful of plain HTTPS GETs.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from nlg.files import InputError, atomic_write


def fetch(raw_dir: str | Path, files: Mapping[str, str], check: Callable[[bytes, str], object],
          manual: str, timeout: float = 60.0) -> list[Path]:
    """Download `files` (name in raw_dir -> URL), check each with `check(data, url)`, then write them.

    `manual` says which files to put there by hand; it ends the error when a download fails.
    """
    raw_dir = Path(raw_dir)
    fetched = {}
    for name, address in files.items():
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise InputError(f"could not download {address} ({reason}); without network, put {manual} "
                             f"into {raw_dir} yourself and run without --download") from None
        check(data, address)  # refuse an error page or a truncated file
        fetched[name] = data
    written = []
    for name, data in fetched.items():
        with atomic_write(raw_dir / name, "wb") as handle:
            handle.write(data)
        written.append(raw_dir / name)
    return written
