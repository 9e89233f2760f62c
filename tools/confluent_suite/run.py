"""Run confluent-kafka-python's own serde tests with fieldcrypt's twins swapped in (``fieldcrypt_swap.py``).

    git clone --depth 1 https://github.com/confluentinc/confluent-kafka-python /tmp/ckp
    pip install -e '.[confluent-suite]'
    python tools/confluent_suite/run.py /tmp/ckp                       # every suite below
    python tools/confluent_suite/run.py /tmp/ckp async-avro -- -x -q   # one suite, extra pytest arguments

Suites: the asyncio Avro, JSON and Protobuf serde tests (``tests/schema_registry/_async/``) and the sync ones, each
in its own process. confluent's code is never copied into fieldcrypt: the checkout is the caller's. The exceptions
(xfail, strict) and their reasons are listed in docs/compatibility.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = {
    "async-avro": "tests/schema_registry/_async/test_avro_serdes.py",
    "async-json": "tests/schema_registry/_async/test_json_serdes.py",
    "async-avro-conf": "tests/schema_registry/_async/test_avro.py",
    "async-json-conf": "tests/schema_registry/_async/test_json.py",
    "sync-avro": "tests/schema_registry/_sync/test_avro_serdes.py",
    "sync-json": "tests/schema_registry/_sync/test_json_serdes.py",
    "sync-avro-conf": "tests/schema_registry/_sync/test_avro.py",
    "sync-json-conf": "tests/schema_registry/_sync/test_json.py",
    "async-proto": "tests/schema_registry/_async/test_proto_serdes.py",
    "async-proto-conf": "tests/schema_registry/_async/test_proto.py",
    "sync-proto": "tests/schema_registry/_sync/test_proto_serdes.py",
    "sync-proto-conf": "tests/schema_registry/_sync/test_proto.py",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    checkout = Path(argv[0]).resolve()
    rest = argv[1:]
    extra: list[str] = []
    if "--" in rest:
        extra = rest[rest.index("--") + 1 :]
        rest = rest[: rest.index("--")]
    names = rest or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    worst = 0
    for name in names:  # one process per suite: confluent's test modules share global rule registries (its own
        # classes fail test_proto_serdes.py's CEL tests when test_avro.py ran first in the same process)
        cmd = [
            sys.executable, "-m", "pytest", "-p", "fieldcrypt_swap", "-p", "no:cacheprovider",
            "-o", "asyncio_mode=auto", "--rootdir", str(checkout), SUITES[name], *extra,
        ]  # fmt: skip
        # confluent's tests import the installed confluent_kafka; run from the checkout so its conftest is found,
        # with the checkout's src/ kept off the path (the installed release is the one fieldcrypt was built against)
        print(f"== {name}", flush=True)
        worst = max(worst, subprocess.call(cmd, cwd=checkout, env=env))
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
