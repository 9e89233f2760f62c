"""The errors of the tools that read topics and registries (exit 5 and 4 of the ``fieldcrypt`` command, which
``fieldcrypt.cli._common`` maps): raised by the topic reader, so library callers and the CLI see the same ones. A
module of its own, so the CLI's commands that read no topic do not import confluent-kafka's clients."""

from __future__ import annotations

from fieldcrypt.errors import FieldcryptError

__all__ = ["NotFoundError", "UnavailableError"]


class NotFoundError(FieldcryptError):
    """What a command was asked to read does not exist (a topic, a subject, a file): exit 5."""


class UnavailableError(FieldcryptError):
    """A broker or schema registry did not answer within the timeout: exit 4."""
