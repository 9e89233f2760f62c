"""The ``fieldcrypt`` command: key administration, schema checks, topic audits and a local stack.

    fieldcrypt kek create PATH                         a local key-encryption key
    fieldcrypt keys init|list|show|rotate|rewrap|shred|audit|shred-log|restore
    fieldcrypt schema lint FILE... | --subject S       what fieldcrypt will encrypt, refuse or leave in clear
    fieldcrypt verify TOPIC                            re-read a topic: readable, erased, denied, plaintext values
    fieldcrypt scan TOPIC                              audit a topic for plaintext personal data
    fieldcrypt dev up|broker|registry                  a local broker, registry and key store to try things

Settings come from a configuration file, then environment variables, then flags (see
:mod:`fieldcrypt.cli._config`). Exit codes, the same for every command: 0 done, 1 unexpected error (or a shred not
confirmed), 2 usage, 3 configuration error, 4 key store (or broker, registry) unavailable, 5 key or topic not
found, 6 shred pending, 7 findings (plaintext personal data, refused tags...), 130 interrupted. With ``--json``,
errors are JSON too: ``{"error": {"type": ..., "message": ..., "exit_code": ...}}`` on stdout. Output to a closed
pipe (``fieldcrypt keys list | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from fieldcrypt.cli import keys as _keys
from fieldcrypt.cli._common import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ArgumentParser,
    NotFoundError,
    UnavailableError,
    UsageError,
    clean,
    kms_seconds,
    seconds,
)
from fieldcrypt.cli._config import resolve
from fieldcrypt.errors import ConfigurationError, FieldcryptError, KeyNotFoundError, KeyStoreUnavailableError

__all__ = ["build_parser", "main"]

EXIT_INTERRUPTED = 130


def _version() -> str:
    try:
        return metadata.version("fieldcrypt")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Option groups shared by commands (argparse parents)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (TOML; default $FIELDCRYPT_CONFIG, else ~/.config/fieldcrypt/config.toml)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output (errors too)")

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", metavar="URL", help="key store URL ($FIELDCRYPT_STORE)")
    store.add_argument(
        "--kek",
        metavar="URI",
        action="append",
        default=None,
        help="KEK URI, repeatable: the first wraps new keys ($FIELDCRYPT_KEK); needed to read or rewrap data",
    )
    store.add_argument("--actor", help="who is acting, for the audit log ($FIELDCRYPT_ACTOR; default user@host)")
    store.add_argument(
        "--kms-timeout",
        type=kms_seconds,
        metavar="SECONDS",
        help="give up on a KMS that does not answer after this long, per key, retries included "
        "($FIELDCRYPT_KMS_TIMEOUT; default 5)",
    )
    store.add_argument(
        "--progress", action="store_true", default=None, help="show progress on stderr even when it is not a terminal"
    )

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "-b", "--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers ($FIELDCRYPT_BOOTSTRAP_SERVERS)"
    )
    cluster.add_argument(
        "-X",
        metavar="KEY=VALUE",
        action="append",
        default=None,
        help="a librdkafka property, repeatable (security.protocol=SASL_SSL, sasl.username=...)",
    )
    cluster.add_argument(
        "-F",
        "--kafka-config",
        "--command-config",
        dest="kafka_config",
        metavar="FILE",
        help="a properties file of librdkafka settings, as kcat -F and the Kafka tools read ($FIELDCRYPT_KAFKA_CONFIG)",
    )
    cluster.add_argument("--schema-registry", metavar="URL", help="schema registry URL ($FIELDCRYPT_SCHEMA_REGISTRY)")
    cluster.add_argument(
        "--registry-conf",
        metavar="KEY=VALUE",
        action="append",
        default=None,
        help="a SchemaRegistryClient setting, repeatable (basic.auth.user.info=..., ssl.ca.location=...)",
    )
    cluster.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up on an unreachable broker or registry after this long (default: %(default)s)",
    )
    return {"common": common, "store": store, "cluster": cluster}


def build_parser(area: str | None = None) -> argparse.ArgumentParser:
    """The whole command line (docs/cli.md is generated from it). ``area``: a command named on the command line;
    only its module is imported (``keys`` needs none of the schema and topic tools' imports: a quicker start)."""
    parents = _parents()
    p = ArgumentParser(
        prog="fieldcrypt",
        description="Field-level encryption for Kafka: key administration, schema checks and topic audits.",
        epilog="Run 'fieldcrypt COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"fieldcrypt {_version()}", help="print the version")
    sub = p.add_subparsers(dest="area", metavar="COMMAND")
    _keys.register(sub, parents["common"], parents["store"])
    for name in _COMMANDS:
        if area in _AREAS and name != area:
            continue
        module = __import__(f"fieldcrypt.cli.{name}", fromlist=["register"])
        module.register(sub, parents)
    return p


#: command modules beside ``keys`` (each has ``register(subparsers, parents)``)
_COMMANDS = [
    name
    for name in ("schema", "verify", "scan", "dev")
    if os.path.exists(os.path.join(os.path.dirname(__file__), f"{name}.py"))
]


#: every command's name
_AREAS = frozenset({"keys", "kek", *_COMMANDS})  # (kek and keys: the keys module)


def _area(argv: Sequence[str]) -> str | None:
    """The command the arguments begin with, if they do (anything before it, ``--help`` included: None, the whole
    command line)."""
    return argv[0] if argv and argv[0] in _AREAS else None


def _error(args: argparse.Namespace | None, json_wanted: bool, exc: BaseException, code: int) -> int:
    message = clean(str(exc)) or type(exc).__name__
    if args is not None and getattr(args, "settings", None) is not None:
        from fieldcrypt.cli._config import scrub

        message = scrub(message, args.settings)
    if json_wanted:
        error = {"type": type(exc).__name__, "message": message, "exit_code": code}
        print(json.dumps({"error": error}))
    else:
        print(f"fieldcrypt: {message}", file=sys.stderr)
    return code


def _help_for(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the deepest command named in argv (to print its help when its action is missing)."""
    current = parser
    for word in argv:
        if word.startswith("-"):
            continue
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        current = subs[0].choices[word]
    return current


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_wanted = "--json" in argv
    args: argparse.Namespace | None = None
    try:
        parser = build_parser(_area(argv))
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        run: Any = getattr(args, "run", None)
        if run is None:  # bare 'fieldcrypt' or 'fieldcrypt keys': the help of what was named
            _help_for(parser, argv).print_help()
            return EXIT_OK
        args.settings = resolve(args)
        code: int = run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (| head): stop quietly; point stdout at /dev/null so the interpreter's final flush
        # does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        pending: int = getattr(args, "exit_code", EXIT_OK) if args is not None else EXIT_OK
        return pending
    except KeyboardInterrupt:
        print("fieldcrypt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        return _error(args, json_wanted, exc, EXIT_USAGE)
    except _keys.NotConfirmed:
        return EXIT_ERROR
    except ConfigurationError as exc:
        return _error(args, json_wanted, exc, EXIT_CONFIG)
    except (KeyStoreUnavailableError, UnavailableError) as exc:
        return _error(args, json_wanted, exc, EXIT_UNAVAILABLE)
    except (KeyNotFoundError, NotFoundError) as exc:
        return _error(args, json_wanted, exc, EXIT_NOT_FOUND)
    except (FieldcryptError, OSError) as exc:
        return _error(args, json_wanted, exc, EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
