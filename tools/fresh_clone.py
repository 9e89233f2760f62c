"""Time a newcomer's first run, per role, on a fresh clone: from nothing to "produced an encrypted record, read it
back, shredded a person, proved it erased", following the docs literally (installation lines included, run for
real against PyPI).

    python tools/fresh_clone.py                       # every role; prints a table of seconds
    python tools/fresh_clone.py --role key-admins     # one role
    python tools/fresh_clone.py --plan                # what each role runs, without running it

Each role gets its own clone of the repository's committed HEAD (``git clone``), a virtual environment made as the
README makes it (``python3 -m venv .venv``, active for the rest: the guides' ``pip install`` lines install into it),
and then its pages run top to bottom through the same harness as the test suite (tests/docs_harness.py), with the
installation lines run as written. The figures are in docs/getting-started/index.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: what each role reads, in order; every role ends with the erasure runbook's rehearsal (shred, then verify)
ROLES: dict[str, tuple[str, ...]] = {
    "quick-start": ("README.md",),
    "developers": ("docs/getting-started/developers.md", "docs/erasure-runbook.md"),
    "key-admins": ("docs/getting-started/key-admins.md", "docs/erasure-runbook.md"),
    "auditors": ("docs/getting-started/auditors.md", "docs/erasure-runbook.md"),
}


def run_role(role: str, pg_admin_url: str | None) -> list[tuple[str, float]]:
    timings: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix=f"fieldcrypt-{role}-") as tmp:
        clone = Path(tmp) / "fieldcrypt"
        start = time.monotonic()
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True)
        timings.append(("clone and venv", time.monotonic() - start))
        env_path = os.pathsep.join(
            p for p in os.environ.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO / ".venv"))
        )
        os.environ["PATH"] = env_path
        sys.path.insert(0, str(clone / "tests"))
        try:
            import docs_harness

            for number, name in enumerate(ROLES[role]):
                page = clone / name
                work = Path(tmp) / f"page-{number}"
                work.mkdir()
                start = time.monotonic()
                run = docs_harness.PageRun(page, work, pg_admin_url, fresh=True)
                run.run(docs_harness.read_blocks(page))
                timings.append((name, time.monotonic() - start))
        finally:
            sys.path.remove(str(clone / "tests"))
            sys.modules.pop("docs_harness", None)
        shutil.rmtree(clone / ".venv", ignore_errors=True)
    return timings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=sorted(ROLES), action="append", help="a role to time (repeatable; default all)")
    ap.add_argument("--plan", action="store_true", help="print the pages of each role and stop")
    ap.add_argument(
        "--pg",
        default=os.environ.get("FIELDCRYPT_TEST_PG", "postgresql://root@127.0.0.1:5432/test"),
        help="a PostgreSQL URL with the right to create roles and databases (for the key-admins guide)",
    )
    args = ap.parse_args()
    roles = args.role or list(ROLES)
    for role in roles:
        missing = [p for p in ROLES[role] if not (REPO / p).is_file()]
        if missing:
            print(f"{role}: missing pages {missing}", file=sys.stderr)
            return 1
    if args.plan:
        for role in roles:
            print(f"{role}: clone, python3 -m venv .venv, then " + " -> ".join(ROLES[role]))
        return 0
    print(f"{'ROLE':<12}  {'STEP':<40}  SECONDS")
    for role in roles:
        total = 0.0
        for step, seconds in run_role(role, args.pg):
            total += seconds
            print(f"{role:<12}  {step:<40}  {seconds:7.1f}", flush=True)
        print(f"{role:<12}  {'total':<40}  {total:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
