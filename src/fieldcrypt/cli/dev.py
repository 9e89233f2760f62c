"""``fieldcrypt dev up|broker|registry``: a local stack to try fieldcrypt, in the foreground until Ctrl-C.

``up`` starts a broker (Tansu), a development schema registry and, in a state directory, a SQLite key store with a
local KEK (:class:`fieldcrypt.dev.LocalStack`); ``broker`` and ``registry`` start one of them. Each prints the
``FIELDCRYPT_*`` environment variables that point the other commands at it (``--env-file FILE`` also writes them
as a file to ``source``, removed again on stop; ``--json`` prints them as one line of JSON), then stays up until
Ctrl-C, SIGTERM or SIGHUP, stops everything it started and exits 0. Development only: no authentication, no TLS,
loopback addresses, topics and schemas in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fieldcrypt.cli._common import EXIT_OK, UsageError, clean, given

__all__ = ["register"]

_ENV_FILE_MARK = "# fieldcrypt dev"
#: Kafka's rule for topic names
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_POLL = 0.2  # how often the foreground loop checks that the broker still runs


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")
    return port


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev",
        help="a local broker, schema registry and key store to try things (development only)",
        description="A local stack to try fieldcrypt and its commands: run one of these in a terminal, use the "
        "FIELDCRYPT_* variables it prints in another. Development only: no authentication, no TLS, loopback "
        "addresses, topics and schemas kept in memory.",
    )
    ds = dev.add_subparsers(dest="action", metavar="ACTION")

    out = argparse.ArgumentParser(add_help=False)
    out.add_argument(
        "--env-file",
        metavar="FILE",
        help="also write the FIELDCRYPT_* variables to FILE, to 'source' in another shell (removed on stop; an "
        "existing file is replaced only if fieldcrypt dev wrote it)",
    )
    topics = argparse.ArgumentParser(add_help=False)
    topics.add_argument(
        "--create-topic",
        metavar="NAME",
        action="append",
        default=None,
        help="create this topic with one partition (repeatable; Tansu gives auto-created topics 4)",
    )
    meta = argparse.ArgumentParser(add_help=False)
    meta.add_argument(
        "--drop-metadata",
        action="store_true",
        help="the registry drops metadata and ruleSet on registration, as several open-source registries do",
    )
    common = parents["common"]

    up = ds.add_parser(
        "up",
        parents=[common, out, topics, meta],
        help="start a broker, a schema registry, a key store and a local KEK",
        description="Start a broker (Tansu, in memory), a development schema registry (no auth, no compatibility "
        "checks, in memory) and, in a state directory, a SQLite key store with a local KEK; print the FIELDCRYPT_* "
        "variables to export; stay up until Ctrl-C or SIGTERM, then stop everything and exit 0.",
    )
    up.add_argument("--port", type=_port, metavar="PORT", help="the broker's port on 127.0.0.1 (default: a free one)")
    up.add_argument(
        "--registry-port", type=_port, metavar="PORT", help="the registry's port on 127.0.0.1 (default: a free one)"
    )
    up.add_argument(
        "--state",
        metavar="DIR",
        help="keep the key store (keys.db) and KEK (kek.json) in DIR, created if missing and reused by later runs "
        "(default: a temporary directory, removed on stop)",
    )
    up.add_argument("--no-keys", action="store_true", help="no key store and no KEK: only the broker and registry")
    up.set_defaults(run=_run_up)

    broker = ds.add_parser(
        "broker",
        parents=[common, out, topics],
        help="start a broker only (Tansu, in memory)",
        description="Start a Kafka-protocol broker (Tansu: the broker extra, pip install 'fieldcrypt[broker]') on "
        "127.0.0.1 with in-memory storage, print FIELDCRYPT_BOOTSTRAP_SERVERS, stay up until Ctrl-C or SIGTERM.",
    )
    broker.add_argument("--port", type=_port, metavar="PORT", help="the port on 127.0.0.1 (default: a free one)")
    broker.set_defaults(run=_run_broker)

    registry = ds.add_parser(
        "registry",
        parents=[common, out, meta],
        help="start a development schema registry only (no auth, no compatibility checks, in memory)",
        description="Start a Confluent-compatible development schema registry over HTTP on 127.0.0.1 (no "
        "authentication, no compatibility checks, schemas in memory: fieldcrypt.dev.RegistryServer), print "
        "FIELDCRYPT_SCHEMA_REGISTRY, stay up until Ctrl-C or SIGTERM.",
    )
    registry.add_argument("--port", type=_port, metavar="PORT", help="the port on 127.0.0.1 (default: a free one)")
    registry.set_defaults(run=_run_registry)


# --- the commands ------------------------------------------------------------------------------------------------


def _topics(args: argparse.Namespace) -> list[str]:
    names: list[str] = []
    for name in getattr(args, "create_topic", None) or []:
        if not _TOPIC.fullmatch(name) or name in (".", ".."):
            raise UsageError(
                f"--create-topic {clean(name)!r} is not a topic name (1-249 of the characters a-z A-Z 0-9 . _ -)"
            )
        names.append(name)
    return list(dict.fromkeys(names))


def _run_up(args: argparse.Namespace) -> int:
    from fieldcrypt.dev import LocalStack

    if args.no_keys and args.state is not None:
        raise UsageError("--state holds the key store and KEK: it cannot go with --no-keys")
    state = given(args.state, "--state")
    if state is not None:
        where = Path(state)
        if where.exists() and not where.is_dir():
            raise UsageError(f"--state {clean(state)!r} is not a directory")
        parent = where
        while not parent.exists() and parent != parent.parent:  # the directory it would be made in
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UsageError(f"--state {clean(state)!r}: {clean(str(parent))!r} is not writable")
    if args.port is not None and args.port == args.registry_port:
        raise UsageError("--port and --registry-port are the same port")
    topics = _topics(args)
    return _serve(
        args,
        lambda: LocalStack(
            keys=not args.no_keys,
            state=state,
            broker_port=args.port,
            registry_port=args.registry_port,
            topics=topics,
            keep_metadata=not args.drop_metadata,
        ),
    )


def _run_broker(args: argparse.Namespace) -> int:
    from fieldcrypt.dev import LocalStack

    topics = _topics(args)
    return _serve(args, lambda: LocalStack(registry=False, keys=False, broker_port=args.port, topics=topics))


def _run_registry(args: argparse.Namespace) -> int:
    from fieldcrypt.dev import LocalStack

    return _serve(
        args,
        lambda: LocalStack(broker=False, keys=False, registry_port=args.port, keep_metadata=not args.drop_metadata),
    )


# --- running in the foreground -------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    # the first stop signal stops the stack; any later one is ignored from this moment (a second signal between
    # here and the cleanup would skip it, leaving the env file and the broker behind)
    for name in _STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise KeyboardInterrupt


_STOP_SIGNALS = tuple(n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) stop the stack as Ctrl-C does. SIGTERM and SIGHUP would
    otherwise end Python at once and leave the broker process running; SIGINT is taken over even where it was
    ignored (a job that a script started with '&'), so 'kill -INT' stops the stack there too."""
    if not _in_main_thread():
        yield
        return
    sigs = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    saved = {s: signal.signal(s, _interrupt) for s in sigs}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """While stopping: a second Ctrl-C (or SIGTERM) must not leave a half-stopped stack behind."""
    if not _in_main_thread():
        yield
        return
    sigs = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _serve(args: argparse.Namespace, start: Callable[[], Any]) -> int:
    from fieldcrypt.dev import BrokerError

    env_file = _env_file_target(args.env_file)
    with _stop_signals():
        stack = start()  # an interrupt while starting stops what started (exit 130, as for any command)
        written: str | None = None
        try:
            env: dict[str, str] = stack.env()
            if env_file is not None:
                written = _write_env_file(env_file, env)
            _announce(args, stack, env)
            while stack.running:
                time.sleep(_POLL)
            tail = stack.broker.log_tail(1) if stack.broker is not None else ""
            raise BrokerError(f"the broker exited unexpectedly{': ' + clean(tail) if tail else ''}")
        except KeyboardInterrupt:
            pass
        finally:
            with _uninterrupted():
                try:
                    stack.stop()
                finally:
                    if env_file is not None and written is not None:
                        _remove_env_file(env_file, written)
    if not args.json:
        print("fieldcrypt dev: stopped", file=sys.stderr)
    return EXIT_OK


def _announce(args: argparse.Namespace, stack: Any, env: dict[str, str]) -> None:
    data: dict[str, Any] = {
        "bootstrap_servers": stack.bootstrap_servers,
        "schema_registry": stack.registry_url,
        "store": stack.store_url,
        "kek": stack.kek_uri,
        "state": str(stack.state) if stack.state is not None else None,
        "state_temporary": stack.state_is_temporary if stack.state is not None else None,
        "topics": stack.topics if stack.broker is not None else None,
        "env": env,
        "env_file": args.env_file,
        "pid": os.getpid(),
        "broker_pid": stack.broker.pid if stack.broker is not None else None,
    }
    if args.json:
        # one line: a script reading the pipe has the whole document as soon as the line ends (the command stays up)
        print(json.dumps({k: v for k, v in data.items() if v is not None}), flush=True)
        return
    lines = ["fieldcrypt dev: a local stack for development (no authentication, in memory); Ctrl-C stops it"]
    if stack.broker is not None:
        topics = f"; topics: {', '.join(stack.topics)}" if stack.topics else ""
        lines.append(f"  broker     {stack.bootstrap_servers} (Tansu{topics})")
    if stack.registry is not None:
        lines.append(f"  registry   {stack.registry_url} (development registry: no auth, no compatibility checks)")
    if stack.store_url is not None:
        lines.append(f"  key store  {clean(stack.store_url)}")
        lines.append(f"  KEK        {clean(stack.kek_uri)}")
        if stack.state_is_temporary:
            lines.append(f"  state      {clean(str(stack.state))} (temporary: removed on stop; --state DIR keeps it)")
        else:
            kept = ", keys of an earlier run reused" if stack.reused_keys else ""
            lines.append(f"  state      {clean(str(stack.state))} (kept{kept})")
    lines.append("")
    if args.env_file:
        lines.append(f"In another shell: source {shlex.quote(args.env_file)}   (or export these)")
    else:
        lines.append("In another shell, export:")
    lines += [f"  export {k}={shlex.quote(v)}" for k, v in env.items()]
    if stack.broker is not None and stack.registry is not None and stack.store_url is not None:
        lines += [
            "",
            "Then try: python examples/end_to_end.py --from-env (from a checkout), fieldcrypt verify TOPIC, "
            "fieldcrypt keys list",
        ]
    print("\n".join(lines), flush=True)


# --- the environment file ----------------------------------------------------------------------------------------


def _env_file_target(path: str | None) -> Path | None:
    """Where to write the environment file; refuses, before anything starts, a file fieldcrypt dev did not write."""
    path = given(path, "--env-file")
    if path is None:
        return None
    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(f"--env-file: directory {clean(str(target.parent))!r} does not exist")
    if target.is_dir():
        raise UsageError(f"--env-file {clean(path)!r} is a directory")
    if not os.access(target.parent, os.W_OK):
        raise UsageError(f"--env-file: directory {clean(str(target.parent))!r} is not writable")
    if target.exists():
        owner = _owner(target)
        if owner is None:
            raise UsageError(
                f"--env-file {clean(path)!r} exists and was not written by fieldcrypt dev: remove it or choose "
                "another file"
            )
        if owner != os.getpid() and _alive(owner):
            raise UsageError(
                f"--env-file {clean(path)!r} belongs to a fieldcrypt dev still running (pid {owner}): stop it or "
                "choose another file"
            )
    return target


def _owner(path: Path) -> int | None:
    """The pid in the first line of an env file fieldcrypt dev wrote (0 if it names none), None if not one."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith(_ENV_FILE_MARK):
        return None
    found = re.search(r"\(pid (\d+)\)", first)
    return int(found.group(1)) if found else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _write_env_file(path: Path, env: dict[str, str]) -> str:
    """Write it whole or not at all (a reader waiting for the file never sees half of it); returns the text."""
    text = (
        f"{_ENV_FILE_MARK} (pid {os.getpid()}): the local stack's settings for the fieldcrypt command.\n"
        f"# Use them in a shell: source {shlex.quote(str(path))}   (removed when the stack stops)\n"
        + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return text


def _remove_env_file(path: Path, written: str) -> None:
    """Remove the file if it still holds what this run wrote (another run may have replaced it since)."""
    try:
        if path.read_text(encoding="utf-8") == written:
            path.unlink()
    except OSError:
        pass
