"""The architecture is a test: the layers and forbidden imports of pyproject.toml's import-linter contracts hold
(lint-imports), no module takes part in an import cycle, and the layer order is the one docs/architecture.md
draws. A new import from a lower layer up, or a new circle, fails here with the chain that makes it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _format_packages() -> list[str]:
    """The folders of the registered formats (``fieldcrypt.formats``): ``avro``, ``json_schema``, ..."""
    from fieldcrypt.formats import formats

    return sorted(type(f).__module__.split(".")[1] for f in formats())


def _stated_layers() -> list[str]:
    """The allowed order, top to bottom: each layer may import only the layers below it; ``a | b`` are siblings
    that do not import each other. The formats' layer holds every registered format's folder."""
    return [
        "cli | _testing | lint | detectors | metrics | keyring | stats",
        "dev",
        "inspect",
        "formats",
        " | ".join(_format_packages()),
        "core",
        "keys | observe",
        "crypto",
        "errors | clock",
    ]


def _contracts() -> dict[str, dict[str, object]]:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in conf["contracts"]}


def test_the_layer_order_is_the_stated_one() -> None:
    """pyproject.toml's layers are these, in this order, with every registered format in the formats' layer (a new
    format folder must be placed there)."""
    layers = _contracts()["layers"]
    assert layers["layers"] == _stated_layers() and layers["containers"] == ["fieldcrypt"]
    assert layers["exhaustive"] is True


def test_every_format_is_held_to_the_record_path_contracts() -> None:
    """The contracts that name the formats name every registered one: a new format's serde may not import key
    administration, and the core may not import it."""
    contracts = _contracts()
    for package in _format_packages():
        assert f"fieldcrypt.{package}" in contracts["record-path-no-admin"]["source_modules"], package
        assert f"fieldcrypt.{package}" in contracts["core-knows-no-format"]["forbidden_modules"], package


def test_docs_draw_the_same_layers() -> None:
    """docs/architecture.md's table of layers lists them in this order, so the picture cannot drift."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    text = text[text.index("## Layers") :]
    at = 0
    for layer in _stated_layers():
        first = layer.split(" | ")[0]
        found = text.find(f"`{first}`", at)
        assert found >= 0, f"docs/architecture.md's layers do not name {layer!r} after the ones above it"
        at = found


def test_import_contracts_hold() -> None:
    """lint-imports (import-linter) over the installed package: every contract in pyproject.toml is kept."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[result.stdout.find("Contracts") :] + result.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout), result.stdout


def _cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (and modules importing themselves): every set of
    modules that import each other, directly or through others (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, ()):
                        found.append(sorted(component))
    return found


def _import_graph() -> dict[str, set[str]]:
    """Every import between fieldcrypt's modules, those under ``if TYPE_CHECKING:`` and inside functions included
    (a circle that only type checking or a late import hides is still a circle)."""
    graph = grimp.build_graph("fieldcrypt", cache_dir=None)
    return {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i.split(".")[0] == "fieldcrypt"}
        for m in graph.modules
        if m.split(".")[0] == "fieldcrypt"
    }


def test_no_import_cycles() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
        ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_the_cycle_check_finds_circles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert sorted(_cycles(edges)) == expected


def test_the_public_face_and_the_key_commands_load_no_record_path() -> None:
    """``import fieldcrypt`` and the CLI's start (``fieldcrypt keys ...``) load keys and crypto, not the plan, the
    engine or confluent-kafka's schema-registry clients (~0.3 s more per command)."""
    code = (
        "import sys, fieldcrypt, fieldcrypt.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('confluent_kafka.schema_registry', "
        "'fieldcrypt.core.engine', 'fieldcrypt.core.plan', 'fieldcrypt.avro', 'fieldcrypt.json_schema'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_the_public_module_paths_of_before_the_split_still_work() -> None:
    """``fieldcrypt.keyring`` and ``fieldcrypt.stats`` (public names before the keys and observability got their
    folders) still hold what they held, and a ``SerdeStats`` pickled under the old module path loads."""
    import pickle

    import fieldcrypt
    import fieldcrypt.keyring
    import fieldcrypt.metrics
    import fieldcrypt.stats

    assert fieldcrypt.keyring.Keyring is fieldcrypt.Keyring
    assert fieldcrypt.keyring.RotationPolicy is fieldcrypt.RotationPolicy
    assert {"KeyMeter", "PersonShred", "ShredReport", "SkippedRotation"} <= set(fieldcrypt.keyring.__all__)
    assert fieldcrypt.stats.SerdeStats is fieldcrypt.SerdeStats
    assert fieldcrypt.stats.LATENCY_BUCKETS == fieldcrypt.metrics.LATENCY_BUCKETS
    stats = fieldcrypt.SerdeStats()
    stats.records = 3
    old = pickle.dumps(stats, protocol=0).replace(b"fieldcrypt.observe.stats", b"fieldcrypt.stats")
    assert b"fieldcrypt.stats\n" in old
    assert pickle.loads(old).records == 3
