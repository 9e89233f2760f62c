"""Where the ``fieldcrypt`` command finds its settings: a configuration file, then environment variables, then
flags, each overriding the one before.

The configuration file is TOML, at ``--config PATH``, else ``$FIELDCRYPT_CONFIG``, else
``$XDG_CONFIG_HOME/fieldcrypt/config.toml`` (``~/.config/fieldcrypt/config.toml``). A file named by ``--config`` or
``$FIELDCRYPT_CONFIG`` must exist; the default one may be absent. Every key is checked: a key fieldcrypt does not
know is an error, never ignored::

    store = "postgresql://fieldcrypt@db.internal/keys"
    kek = "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/..."   # or a list: [new, old, ...]
    actor = "jane@example.com"
    shred_log = "/mnt/shred-log/shred-log.jsonl"   # appended by every shred; re-applied when a keyring opens
    kms_timeout = 5                # seconds one key waits for the KMS, retries included (more than 0, at most 300)

    [kafka]                      # librdkafka properties, as in a kcat / Kafka CLI properties file
    "bootstrap.servers" = "broker-1:9092"
    "security.protocol" = "SASL_SSL"
    "sasl.mechanisms" = "PLAIN"

    [registry]                   # confluent-kafka SchemaRegistryClient settings
    url = "https://registry.internal"
    "basic.auth.user.info" = "user:password"

The tag configuration producers, consumers and the tools share (serde conf keys; ``fieldcrypt.policy_conf()`` gives
it to a serde's ``conf``)::

    [policy]
    tags = ["PII", "JOIN"]
    deterministic_tags = ["JOIN"]          # fieldcrypt.deterministic.tags
    data_subject_tag = "DATA_SUBJECT_ID"
    tag_domains = { JOIN = "customers" }
    masks = { PII = "email" }

A KEK per key domain (the ``"*"`` entry: every other domain)::

    [kek]
    contact = "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/contact"
    health = "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/health"
    "*" = "local-kek:///etc/fieldcrypt/kek.json"

and the same as flags or in the environment: ``--kek contact=URI --kek health=URI --kek URI``,
``FIELDCRYPT_KEK="contact=URI,health=URI,URI"``.

Environment variables: ``FIELDCRYPT_STORE``, ``FIELDCRYPT_KEK`` (one URI, or several separated by commas),
``FIELDCRYPT_ACTOR``, ``FIELDCRYPT_SHRED_LOG``, ``FIELDCRYPT_KMS_TIMEOUT``, ``FIELDCRYPT_BOOTSTRAP_SERVERS``,
``FIELDCRYPT_KAFKA_CONFIG`` (a properties file), ``FIELDCRYPT_SCHEMA_REGISTRY`` (the registry URL),
``FIELDCRYPT_REGISTRY_USER_INFO`` (``user:password`` for the registry's basic auth: keeps the secret out of the
command line).

Flags: ``--store``, ``--kek``, ``--actor``, ``--kms-timeout``; ``-b/--bootstrap-servers``, ``-F/--kafka-config FILE``,
``-X key=value`` (librdkafka); ``--schema-registry URL``, ``--registry-conf key=value``. For the Kafka settings
the order is: ``[kafka]`` of the file < ``$FIELDCRYPT_KAFKA_CONFIG`` < ``$FIELDCRYPT_BOOTSTRAP_SERVERS`` <
``-F`` < ``-b`` < ``-X``.

Secrets (passwords, tokens) never appear in output or errors: messages name the setting, not its value.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fieldcrypt.cli._common import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys.kek import MAX_KMS_TIMEOUT, check_kms_timeout

__all__ = [
    "POLICY_KEYS",
    "Settings",
    "config_path",
    "load",
    "parse_assignments",
    "policy_conf",
    "read_properties",
    "scrub",
]

_TOP_KEYS = ("store", "kek", "actor", "shred_log", "kms_timeout", "kafka", "registry", "policy")

#: the ``[policy]`` table: the tag configuration producers, consumers and the tools share, as serde conf keys
POLICY_KEYS = {
    "tags": "fieldcrypt.tags",
    "plaintext_tags": "fieldcrypt.plaintext.tags",
    "data_subject_tag": "fieldcrypt.data.subject.tag",
    "tag_domains": "fieldcrypt.tag.domains",
    "masks": "fieldcrypt.masks",
    "deterministic_tags": "fieldcrypt.deterministic.tags",
    "domain": "fieldcrypt.domain",
}


@dataclass
class Settings:
    """The resolved settings of one command run."""

    store: str | None = None
    keks: list[str] = field(default_factory=list)
    actor: str | None = None
    shred_log: str | None = None  # the keyring's shred_log file: appended by every shred, re-applied at startup
    kms_timeout: float | None = None  # the keyring's kms_timeout (None: its default)
    kafka: dict[str, str] = field(default_factory=dict)
    registry: dict[str, str] = field(default_factory=dict)
    #: the [policy] table, as serde conf keys: the defaults of the tag options (flags override them key by key)
    policy: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the configuration file read, if any

    def __repr__(self) -> str:  # settings hold secrets: never print them
        return f"Settings(store={'set' if self.store else None}, source={self.source!r})"

    def kafka_conf(self) -> dict[str, str]:
        """librdkafka settings for a client; ``bootstrap.servers`` is required."""
        if not self.kafka.get("bootstrap.servers", "").strip():
            raise ConfigurationError(
                "no Kafka cluster: pass -b/--bootstrap-servers, -X bootstrap.servers=..., a -F properties file, or set "
                "FIELDCRYPT_BOOTSTRAP_SERVERS (or [kafka] in the configuration file)"
            )
        return dict(self.kafka)

    def registry_conf(self) -> dict[str, str]:
        """SchemaRegistryClient settings; ``url`` is required."""
        if not self.registry.get("url", "").strip():
            raise ConfigurationError(
                "no schema registry: pass --schema-registry URL or set FIELDCRYPT_SCHEMA_REGISTRY "
                "(or [registry] url in the configuration file)"
            )
        return dict(self.registry)

    def secrets(self) -> list[str]:
        """Every configured value that may be a secret: all but the settings known to name only where and how to
        connect (an error that quotes a broker address or a CA file path keeps it); a URL's user info."""
        out: list[str] = []
        for name, value in (*self.kafka.items(), *self.registry.items()):
            if not isinstance(value, str) or len(value) < 3:
                continue
            if name in _NOT_SECRET:
                user_info = urlsplit(value).netloc.rpartition("@")[0] if name == "url" and "@" in value else ""
                if len(user_info) >= 3:
                    out.append(user_info)
                continue
            out.append(value)
        return out


#: settings whose values are addresses, protocol names or file paths, never credentials
_NOT_SECRET = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "client.id",
        "group.id",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.endpoint.identification.algorithm",
        "url",
    }
)


def scrub(text: str, settings: Settings) -> str:
    """``text`` with every configured value that could be a secret replaced by ``***`` (librdkafka and the
    registry client quote values in some errors)."""
    for secret in sorted(settings.secrets(), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def config_path(flag: str | None) -> tuple[Path | None, bool]:
    """The configuration file to read and whether it must exist."""
    if flag is not None:
        if not flag.strip():
            raise UsageError("--config is empty or blank")
        return Path(flag).expanduser(), True
    env = os.environ.get("FIELDCRYPT_CONFIG")
    if env is not None:
        if not env.strip():
            raise ConfigurationError("FIELDCRYPT_CONFIG is set but empty")
        return Path(env).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fieldcrypt" / "config.toml", False


def _table_of_strings(value: Any, where: str, path: Path) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: [{where}] must be a table of settings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, int | float):
            v = str(v)
        if not isinstance(v, str):
            raise ConfigurationError(f"{path}: [{where}] {k!r} must be a string, number or boolean")
        out[k] = v
    return out


def load(path: Path, required: bool) -> dict[str, Any]:
    """The configuration file's content, checked; ``{}`` if the default file is absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigurationError(f"configuration file {str(path)!r} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigurationError(f"configuration file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # tomllib's message names the line and column, never the content
        raise ConfigurationError(f"configuration file {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigurationError(
            f"configuration file {str(path)!r}: unknown setting(s) {unknown}; valid: {list(_TOP_KEYS)}"
        )
    for key in ("store", "actor", "shred_log"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise ConfigurationError(f"configuration file {str(path)!r}: {key} must be a non-empty string")
    if "kms_timeout" in data:
        try:
            data["kms_timeout"] = check_kms_timeout(data["kms_timeout"])
        except ConfigurationError as exc:
            raise ConfigurationError(f"configuration file {str(path)!r}: {exc.reason}") from None
    if "kek" in data:
        kek = data["kek"]
        if isinstance(kek, dict):  # [kek] table: domain (or "*") = URI or [URI, ...]
            keks: Any = []
            for domain, uris in kek.items():
                items = [uris] if isinstance(uris, str) else uris
                if (
                    not domain.strip()
                    or domain != domain.strip()
                    or "=" in domain
                    or "://" in domain
                    or not isinstance(items, list)
                    or not items
                    or not all(isinstance(u, str) and "://" in u for u in items)
                ):
                    keks = []
                    break
                keks += [uri if domain == "*" else f"{domain}={uri}" for uri in items]
        else:
            keks = [kek] if isinstance(kek, str) else kek
        if not isinstance(keks, list) or not keks or not all(isinstance(k, str) and k.strip() for k in keks):
            raise ConfigurationError(
                f"configuration file {str(path)!r}: kek must be a URI, a list of URIs, or a [kek] table mapping key "
                'domains (and "*" for the others; a domain holds no "=", no "://" and no surrounding spaces) to a URI '
                "or a list of URIs"
            )
        data["kek"] = keks
    for key in ("kafka", "registry"):
        if key in data:
            data[key] = _table_of_strings(data[key], key, path)
    if "policy" in data:
        data["policy"] = _policy_table(data["policy"], path)
    return data


def _policy_table(value: Any, path: Path) -> dict[str, Any]:
    """``[policy]``: each key one of :data:`POLICY_KEYS`, its value what the serde conf key takes (lists of tag names,
    a table of tag -> domain or mask, a string); returned as serde conf keys. The serdes check the values."""
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: [policy] must be a table of settings")
    unknown = sorted(set(value) - set(POLICY_KEYS))
    if unknown:
        raise ConfigurationError(f"{path}: [policy] unknown setting(s) {unknown}; valid: {sorted(POLICY_KEYS)}")
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in ("tag_domains", "masks"):
            if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
                raise ConfigurationError(f"{path}: [policy] {key} must be a table of tag = name")
        elif key in ("data_subject_tag", "domain"):
            if not isinstance(v, str):
                raise ConfigurationError(f"{path}: [policy] {key} must be a string")
        elif not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigurationError(f"{path}: [policy] {key} must be a list of tag names")
        out[POLICY_KEYS[key]] = v
    return out


def policy_conf(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ``[policy]`` table of the fieldcrypt configuration file as serde conf keys, for a producer's or consumer's
    ``conf`` (``AvroSerializer(..., conf={**fieldcrypt.policy_conf(), ...})``): ``path``, else ``$FIELDCRYPT_CONFIG``,
    else the default file (absent: ``{}``). The same file the CLI's tools read, so they all share one policy."""
    found, required = config_path(None if path is None else str(path))
    if found is None:  # no home directory to look in
        return {}
    data = load(found, required)
    return dict(data.get("policy", {}))


def read_properties(path: str, what: str) -> dict[str, str]:
    """A Java-style properties file (``key=value`` or ``key: value``; ``#`` and ``!`` comments; a trailing
    backslash continues a line), as kcat ``-F`` and the Kafka CLI tools' ``--command-config`` read."""
    if not path.strip():
        raise UsageError(f"{what} is empty or blank")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{what} {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"{what} {path!r} cannot be read: {exc.strerror}") from None
    return _parse_properties(text, f"{what} {path!r}")


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _parse_properties(text: str, where: str) -> dict[str, str]:
    """``java.util.Properties.load``: a key ends at the first unescaped ``=``, ``:`` or whitespace; a line ending
    in an odd number of backslashes continues on the next (its leading whitespace dropped); ``\\t \\n \\r \\f``,
    ``\\uXXXX`` and ``\\`` before any other character are escapes. Errors name the line, never its content."""
    props: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1] + (lines[i].lstrip(" \t\f") if i < len(lines) else "")
            i += 1
        key, value = _split_property(line, where, number)
        props[key] = value
    return props


def _continues(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _split_property(line: str, where: str, number: int) -> tuple[str, str]:
    pos = 0
    while pos < len(line) and line[pos] not in "=: \t\f":
        pos += 2 if line[pos] == "\\" else 1
    key = line[:pos]
    rest = line[pos:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    key = _unescape(key, where, number)
    if not key:
        raise ConfigurationError(f"{where} line {number}: a setting without a name")
    return key, _unescape(rest, where, number)


def _unescape(text: str, where: str, number: int) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    pos = 0
    while pos < len(text):
        c = text[pos]
        if c != "\\" or pos + 1 >= len(text):
            out.append(c)
            pos += 1
            continue
        nxt = text[pos + 1]
        if nxt == "u":
            digits = text[pos + 2 : pos + 6]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigurationError(f"{where} line {number}: a malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            pos += 6
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            pos += 2
    return "".join(out)


def kek_setting(items: list[str]) -> list[str] | dict[str, list[str]]:
    """The ``kek`` of a Keyring from KEK settings: each a URI (every domain's KEK, the ``"*"`` entry) or
    ``DOMAIN=URI`` (that domain's). A ``=`` counts only before the URI's ``://``, so a URI holding ``=`` stays one.
    Only URIs: a list, as before; any ``DOMAIN=URI``: a mapping."""
    mapping: dict[str, list[str]] = {}
    for item in items:
        head, eq, uri = item.partition("=")
        if eq and "://" not in head:
            if not head.strip() or not uri.strip():
                raise UsageError(f"a KEK setting of the form DOMAIN=URI has an empty {'domain' if uri else 'URI'}")
            mapping.setdefault(head.strip(), []).append(uri.strip())
        else:
            mapping.setdefault("*", []).append(item)
    if list(mapping) == ["*"]:
        return mapping["*"]
    return mapping


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, str]:
    """``key=value`` items of a repeated flag (``-X``, ``--registry-conf``)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{flag} expects key=value, got an item without '=' or without a key")
        out[key.strip()] = value
    return out


def resolve(args: argparse.Namespace) -> Settings:
    """Settings for this run: file < environment < flags."""
    path, required = config_path(getattr(args, "config", None))
    data = load(path, required) if path is not None else {}
    env = os.environ
    s = Settings(source=str(path) if data else None)
    s.store = data.get("store")
    s.keks = list(data.get("kek", []))
    s.actor = data.get("actor")
    s.shred_log = data.get("shred_log")
    s.kms_timeout = data.get("kms_timeout")
    s.kafka = dict(data.get("kafka", {}))
    s.registry = dict(data.get("registry", {}))
    s.policy = dict(data.get("policy", {}))
    if env.get("FIELDCRYPT_STORE"):
        s.store = env["FIELDCRYPT_STORE"]
    if env.get("FIELDCRYPT_KEK"):
        s.keks = [k.strip() for k in env["FIELDCRYPT_KEK"].split(",") if k.strip()]
    if env.get("FIELDCRYPT_ACTOR"):
        s.actor = env["FIELDCRYPT_ACTOR"]
    if env.get("FIELDCRYPT_SHRED_LOG"):
        s.shred_log = env["FIELDCRYPT_SHRED_LOG"]
    if env.get("FIELDCRYPT_KMS_TIMEOUT"):
        try:
            s.kms_timeout = check_kms_timeout(float(env["FIELDCRYPT_KMS_TIMEOUT"]))
        except (ValueError, ConfigurationError):
            raise ConfigurationError(
                f"FIELDCRYPT_KMS_TIMEOUT must be a number of seconds, more than 0 and at most {MAX_KMS_TIMEOUT:g}"
            ) from None
    if env.get("FIELDCRYPT_KAFKA_CONFIG"):
        s.kafka.update(read_properties(env["FIELDCRYPT_KAFKA_CONFIG"], "FIELDCRYPT_KAFKA_CONFIG"))
    if env.get("FIELDCRYPT_BOOTSTRAP_SERVERS"):
        s.kafka["bootstrap.servers"] = env["FIELDCRYPT_BOOTSTRAP_SERVERS"]
    if env.get("FIELDCRYPT_SCHEMA_REGISTRY"):
        s.registry["url"] = env["FIELDCRYPT_SCHEMA_REGISTRY"]
    if env.get("FIELDCRYPT_REGISTRY_USER_INFO"):
        s.registry["basic.auth.credentials.source"] = "USER_INFO"
        s.registry["basic.auth.user.info"] = env["FIELDCRYPT_REGISTRY_USER_INFO"]
    # flags
    if getattr(args, "store", None) is not None:
        if not args.store.strip():
            raise UsageError("--store is empty or blank")
        s.store = args.store
    if getattr(args, "kek", None):
        if any(not k.strip() for k in args.kek):
            raise UsageError("--kek is empty or blank")
        s.keks = list(args.kek)
    if getattr(args, "actor", None) is not None:
        s.actor = args.actor
    if getattr(args, "kms_timeout", None) is not None:
        s.kms_timeout = args.kms_timeout
    if getattr(args, "kafka_config", None) is not None:
        s.kafka.update(read_properties(args.kafka_config, "--kafka-config"))
    if getattr(args, "bootstrap_servers", None) is not None:
        s.kafka["bootstrap.servers"] = args.bootstrap_servers
    s.kafka.update(parse_assignments(getattr(args, "X", None), "-X"))
    if getattr(args, "schema_registry", None) is not None:
        s.registry["url"] = args.schema_registry
    s.registry.update(parse_assignments(getattr(args, "registry_conf", None), "--registry-conf"))
    return s
