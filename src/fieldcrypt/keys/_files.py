"""Where an atomic write of a key admin's file lands (the shred log, a local KEK).

Both are written to a temporary file beside the destination and renamed over it. Renaming over a symbolic link
replaces the link, not the file it points to (a shred log linked onto other storage would stay stale there, with a
regular file in the link's place), so the destination is resolved first: a link's target is written, in the
target's directory, and the link stays a link.
"""

from __future__ import annotations

import os
from pathlib import Path

from fieldcrypt.errors import ConfigurationError

__all__ = ["check_path", "destination", "shown"]


def check_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path; an empty or blank one is a ``ConfigurationError`` (``Path("")`` would be ``.``)."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"the path of {what} is empty; name the file to write")
    return Path(text)


def destination(path: Path, what: str) -> Path:
    """The file a write to ``path`` must replace: ``path`` itself, or, when it is a symbolic link (or a chain of
    them), the file it finally points to, which need not exist yet (a dangling link is written through, not
    replaced). A loop of links is a ``ConfigurationError``."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except (FileNotFoundError, NotADirectoryError):  # dangling: its target (the directory check reports a missing one)
        return Path(os.path.realpath(path))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write {what} {str(path)!r}: it is a symbolic link that cannot be followed "
            f"({exc.strerror or type(exc).__name__})"
        ) from None


def shown(path: Path, target: Path) -> str:
    """``path`` as messages name it: with the link's target when the two differ."""
    return repr(str(path)) if target == path else f"{str(path)!r} (a symbolic link to {str(target)!r})"
