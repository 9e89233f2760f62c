"""A development schema registry: Confluent-compatible, over HTTP, in memory, on this machine.

For trying fieldcrypt locally and for tests that span processes (``fieldcrypt dev registry`` runs one in the
foreground, ``fieldcrypt dev up`` beside a broker). It is **not** a registry for real data:

* no authentication and no TLS: it listens on 127.0.0.1 only;
* no compatibility checks: any schema registers under any subject (``GET /config`` answers ``NONE``);
* in memory: every schema is gone when it stops;
* no modes (always ``READWRITE``), no contexts, no schema normalization beyond compact JSON.

It implements the REST calls confluent-kafka's SchemaRegistryClient makes for serdes (register, lookup,
schema by id, versions, latest, subjects of an id, deletes), answers with the status and error codes Confluent's
API reference gives (40401 subject, 40402 version, 40403 schema not found; 42201 invalid schema, 42202 invalid
version), keeps ``metadata`` and ``ruleSet`` as given (or drops them with ``keep_metadata=False``, as several
open-source registries do), and answers with the schema text re-serialized compactly, as some registries do.

    with RegistryServer() as reg:
        client = SchemaRegistryClient({"url": reg.url})
"""

from __future__ import annotations

import errno
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

from fieldcrypt.errors import ConfigurationError

__all__ = ["RegistryServer"]


class _Invalid(Exception):
    pass


class _State:
    def __init__(self, keep_metadata: bool = True) -> None:
        self.keep_metadata = keep_metadata
        self.lock = threading.Lock()
        self.schemas: list[dict[str, Any]] = []  # index = id - 1
        self.subjects: dict[str, list[int]] = {}  # subject -> schema ids by version

    def canonical(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise _Invalid("the request has no schema")
        kind = body.get("schemaType", "AVRO")
        if kind not in ("AVRO", "JSON", "PROTOBUF"):
            raise _Invalid(f"unknown schema type {kind!r}")
        try:
            text = json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
        except ValueError:
            if kind != "PROTOBUF":
                raise _Invalid("the schema is not valid JSON") from None
        out: dict[str, Any] = {
            "schema": text,
            "schemaType": body.get("schemaType", "AVRO"),
            "references": body.get("references") or [],
        }
        if body.get("metadata") and self.keep_metadata:
            out["metadata"] = body["metadata"]
        if body.get("ruleSet") and self.keep_metadata:
            out["ruleSet"] = body["ruleSet"]
        return out

    def register(self, subject: str, body: dict[str, Any]) -> int:
        entry = self.canonical(body)
        with self.lock:
            for i, known in enumerate(self.schemas):
                if known == entry:
                    schema_id = i + 1
                    break
            else:
                self.schemas.append(entry)
                schema_id = len(self.schemas)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def answer(self, schema_id: int, subject: str | None = None) -> dict[str, Any]:
        entry = dict(self.schemas[schema_id - 1])
        if entry["schemaType"] == "AVRO":
            entry.pop("schemaType")
        entry["id"] = schema_id
        if subject is not None:
            entry["subject"] = subject
            entry["version"] = self.subjects[subject].index(schema_id) + 1
        return entry


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _missing(self, what: str, code: int = 40401) -> None:
        self._send(404, {"error_code": code, "message": f"{what} not found"})

    def _invalid(self, message: str, code: int = 42201) -> None:
        self._send(422, {"error_code": code, "message": message})

    def _versions(self, subject: str, version: str) -> tuple[list[int], int] | None:
        """The subject's schema ids and the 1-based index a version names; None after answering an error."""
        versions = self.state.subjects.get(subject)
        if not versions:
            self._missing("subject")
            return None
        if version in ("latest", "-1"):
            return versions, len(versions)
        if not re.fullmatch(r"[0-9]+", version) or int(version) == 0:
            self._invalid(f"invalid version {version!r}", 42202)
            return None
        if int(version) > len(versions):
            self._missing("version", 40402)
            return None
        return versions, int(version)

    def do_DELETE(self) -> None:
        path = urlparse(self.path).path
        st = self.state
        if m := re.fullmatch(r"/subjects/([^/]+)", path):
            subject = unquote(m.group(1))
            if subject not in st.subjects:
                return self._missing("subject")
            with st.lock:
                versions = st.subjects.pop(subject)
            return self._send(200, list(range(1, len(versions) + 1)))
        if m := re.fullmatch(r"/subjects/([^/]+)/versions/([^/]+)", path):
            found = self._versions(unquote(m.group(1)), m.group(2))
            if found is None:
                return None
            versions, index = found
            return self._send(200, index)  # soft delete: the version stays readable by id
        return self._missing("resource", 404)

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        st = self.state
        if path == "/schemas/types":
            return self._send(200, ["AVRO", "JSON", "PROTOBUF"])
        if m := re.fullmatch(r"/schemas/ids/(\d+)/versions", path):
            schema_id = int(m.group(1))
            if not 0 < schema_id <= len(st.schemas):
                return self._missing("schema", 40403)
            pairs = [
                {"subject": s, "version": ids.index(schema_id) + 1}
                for s, ids in sorted(st.subjects.items())
                if schema_id in ids
            ]
            return self._send(200, pairs)
        if re.fullmatch(r"/schemas/guids/[^/]+(/schema)?", path):
            return self._missing("schema", 40403)  # this registry gives no GUIDs: a record naming one names nothing
        if m := re.fullmatch(r"/schemas/ids/(\d+)(/schema)?", path):
            schema_id = int(m.group(1))
            if not 0 < schema_id <= len(st.schemas):
                return self._missing("schema", 40403)
            body = st.answer(schema_id)
            return self._send(200, body["schema"] if m.group(2) else body)
        if path == "/subjects":
            return self._send(200, sorted(st.subjects))
        if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            versions = st.subjects.get(unquote(m.group(1)))
            return self._send(200, list(range(1, len(versions) + 1))) if versions else self._missing("subject")
        if m := re.fullmatch(r"/subjects/([^/]+)/versions/([^/]+)(/schema)?", path):
            subject = unquote(m.group(1))
            found = self._versions(subject, m.group(2))
            if found is None:
                return None
            versions, index = found
            body = st.answer(versions[index - 1], subject)
            return self._send(200, body["schema"] if m.group(3) else body)
        if path.startswith("/config") or path.startswith("/mode"):
            return self._send(200, {"compatibilityLevel": "NONE", "mode": "READWRITE"})
        return self._missing("resource", 404)

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, {"error_code": 400, "message": "the request body is not JSON"})
        st = self.state
        try:
            if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
                return self._send(200, {"id": st.register(unquote(m.group(1)), body)})
            if m := re.fullmatch(r"/subjects/([^/]+)", path):
                subject = unquote(m.group(1))
                entry = st.canonical(body)
                if subject not in st.subjects:
                    return self._missing("subject")
                for schema_id in st.subjects[subject]:
                    known = st.schemas[schema_id - 1]
                    if all(known[k] == entry[k] for k in ("schema", "schemaType", "references")):
                        return self._send(200, st.answer(schema_id, subject))
                return self._missing("schema", 40403)
        except _Invalid as exc:
            return self._invalid(str(exc))
        return self._missing("resource", 404)


class RegistryServer:
    """Runs the development registry on 127.0.0.1 (a free port unless ``port`` is given) in a background thread;
    ``url`` is what clients use. A port in use is a :class:`~fieldcrypt.errors.ConfigurationError`.
    ``keep_metadata=False`` drops ``metadata`` and ``ruleSet`` on registration, as several open-source
    registries do."""

    def __init__(self, port: int = 0, *, keep_metadata: bool = True) -> None:
        handler = type("Handler", (_Handler,), {"state": _State(keep_metadata)})
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"127.0.0.1:{port} is already in use: choose another port, or leave it out for a free one"
                ) from None
            raise
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # a short poll interval: stop() waits for the serving loop's next poll
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
