"""``fieldcrypt verify TOPIC``: re-read a topic and count, per key domain or data subject, the encrypted values
that are readable, erased (key shredded) or denied (no key), and the plaintext values in tagged fields."""

from __future__ import annotations

import argparse
from typing import Any

from fieldcrypt.cli._common import EXIT_OK, UsageError, emit, table
from fieldcrypt.cli.keys import keyring_of

__all__ = ["register"]


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        parents=[parents["common"], parents["store"], parents["cluster"]],
        help="re-read a topic: readable, erased, denied and plaintext values",
        description="Re-read a topic from its start through the registry and the key store, and count per key "
        "domain (or data subject) the values that are readable, erased, denied, or plaintext in tagged fields.",
    )
    p.add_argument("topic_arg", nargs="?", metavar="TOPIC", help="the topic to read")
    p.add_argument("--topic", help="the topic to read (the same as TOPIC)")
    p.add_argument("--format", choices=["avro", "json"], default="avro", help="the topic's schema type")
    p.add_argument(
        "--by", choices=["domain", "data-subject"], default="domain", help="count per key domain or per data subject"
    )
    p.set_defaults(run=run)


def topic_of(args: argparse.Namespace) -> str:
    if args.topic_arg and args.topic and args.topic_arg != args.topic:
        raise UsageError("two different topics given (TOPIC and --topic)")
    topic: str | None = args.topic_arg or args.topic
    if topic is None or not topic.strip():
        raise UsageError("name the topic: fieldcrypt verify TOPIC")
    return topic


def run(args: argparse.Namespace) -> int:
    from fieldcrypt._verify import verify_topic

    topic = topic_of(args)
    kafka = args.settings.kafka_conf()
    registry = args.settings.registry_conf()
    kr = keyring_of(args, needs_kek=True)
    try:
        counts = verify_topic(
            kr, topic, kafka["bootstrap.servers"], registry["url"], args.by, args.timeout, args.format
        )
    finally:
        kr.close()
    rows = [{args.by: k, **v} for k, v in sorted(counts.items())]
    emit(args, rows, lambda: table(rows))
    return EXIT_OK
