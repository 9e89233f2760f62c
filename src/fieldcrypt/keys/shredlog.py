"""The shred-log file: every destroyed key id, one JSON object per line, kept apart from database backups.

    {"key_id": "0x1a2b3c4d", "domain": "orders", "data_subject": "cust-001", "shredded_at": "2026-12-01T10:00:00+00:00"}

After a key store is restored from an older backup, re-applying this file (``fieldcrypt keys restore``,
:meth:`fieldcrypt.Keyring.restore`) destroys again every key the backup brought back. Lines written by earlier
versions (integer ``key_id``, ``person``, epoch ``at``) are read too. A line that is not a complete entry (a torn
write when a process stopped mid-line) is a ``ConfigurationError`` naming the file, the line and how to recover: it
is never skipped, since the entry it held may be the only record of an erasure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fieldcrypt.errors import ConfigurationError, format_key_id
from fieldcrypt.keys._files import check_path, destination, shown
from fieldcrypt.keys.store import ShredRecord

__all__ = ["append", "iso_time", "parse_time", "read", "row", "write"]


def iso_time(t: float) -> str:
    """The one time format of fieldcrypt's JSON output and files: ISO-8601 in UTC, to the second."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def parse_time(text: str) -> float:
    """An ISO-8601 date or date-time (UTC unless it names an offset) as epoch seconds. Raises ``ValueError``."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def row(r: ShredRecord) -> dict[str, Any]:
    """One entry as JSON: hex key id, ISO-8601 time."""
    return {
        "key_id": format_key_id(r.key_id),
        "domain": r.domain,
        "data_subject": r.person,
        "shredded_at": iso_time(r.shredded_at),
    }


def _entry(d: Any) -> ShredRecord:
    if not isinstance(d, dict):
        raise ValueError("not an object")
    raw_id = d["key_id"]
    key_id = int(raw_id, 16) if isinstance(raw_id, str) else int(raw_id)
    if isinstance(raw_id, bool) or not 0 < key_id < 2**32:
        raise ValueError("key_id out of range")
    person = d["data_subject"] if "data_subject" in d else d["person"]
    at = d["shredded_at"] if "shredded_at" in d else d["at"]
    when = parse_time(at) if isinstance(at, str) else float(at)
    domain = d["domain"]
    if not isinstance(domain, str) or (person is not None and not isinstance(person, str)):
        raise ValueError("domain and data_subject must be strings")
    return ShredRecord(key_id, domain, person, when)


def read(path: str | os.PathLike[str]) -> list[ShredRecord]:
    """Every entry of a shred-log file. Blank lines are skipped; any other line must be a complete entry."""
    p = Path(path)
    out: list[ShredRecord] = []
    try:
        f = open(p, encoding="utf-8")  # closed by the with below; only the open is guarded here
    except OSError as exc:
        raise ConfigurationError(f"shred log {str(p)!r} cannot be read: {exc.strerror or type(exc).__name__}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(_entry(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                torn = "" if line.endswith("\n") else " (the last line, cut short: a write was interrupted)"
                raise ConfigurationError(
                    f"shred log {str(p)!r} line {n} is not a complete entry{torn}. Nothing was applied. Recover: "
                    f"if the key store is current, rewrite the file from it with `fieldcrypt keys shred-log {p} "
                    f"--store URL --force`; otherwise delete line {n} and re-apply the rest"
                ) from None
    return out


def write(path: str | os.PathLike[str], entries: Iterable[ShredRecord], *, overwrite: bool = False) -> int:
    """Write a whole shred-log file (mode 0600: it names data subjects). Returns how many entries it holds.

    A symbolic link is written through: its target gets the new content (renamed into place in the target's
    directory) and the link stays a link; a dangling link's target is created."""
    asked = check_path(path, "the shred log")
    p = destination(asked, "the shred log")
    name = shown(asked, p)
    if not p.parent.is_dir():
        raise ConfigurationError(
            f"cannot write the shred log {name}: directory {str(p.parent)!r} does not exist (or is not a directory)"
        )
    if p.is_dir():
        raise ConfigurationError(f"cannot write the shred log {name}: it is a directory")
    if p.exists() and not overwrite:
        raise ConfigurationError(f"{name} already exists; pass --force (overwrite=True) to replace it")
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    count = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for r in entries:
                    f.write(json.dumps(row(r)) + "\n")
                    count += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:  # named by the file asked for, never by the temporary file beside it
        raise ConfigurationError(
            f"cannot write the shred log {name}: {exc.strerror or type(exc).__name__}; nothing was written"
        ) from None
    return count


def append(path: str | os.PathLike[str], entries: Sequence[ShredRecord]) -> None:
    """Append entries, each line in one write, synced before returning (the file is created mode 0600)."""
    if not entries:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        data = "".join(json.dumps(row(r)) + "\n" for r in entries).encode()
        if size and not _ends_with_newline(path, size):
            data = b"\n" + data  # never glue a new entry onto a torn one (the torn line is still reported)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(path: str | os.PathLike[str], size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"
