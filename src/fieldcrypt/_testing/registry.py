"""A small Confluent-compatible schema registry over HTTP, for tests and demos that span processes.

It implements the REST calls confluent-kafka's SchemaRegistryClient makes for serdes (register, lookup,
schema by id, versions, latest), keeps ``metadata`` as given, and answers with the schema text re-serialized
compactly, as some registries do. It is a test fixture, not a product: no auth, no compatibility checks.

    with RegistryServer() as reg:
        client = SchemaRegistryClient({"url": reg.url})

``python -m fieldcrypt._testing.registry PORT`` runs one in the foreground.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["RegistryServer"]


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: list[dict[str, Any]] = []  # index = id - 1
        self.subjects: dict[str, list[int]] = {}  # subject -> schema ids by version

    def canonical(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body["schema"]
        try:
            text = json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True)
        except ValueError:
            pass
        out: dict[str, Any] = {
            "schema": text,
            "schemaType": body.get("schemaType", "AVRO"),
            "references": body.get("references") or [],
        }
        if body.get("metadata"):
            out["metadata"] = body["metadata"]
        if body.get("ruleSet"):
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

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        st = self.state
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
        if m := re.fullmatch(r"/subjects/([^/]+)/versions/([^/]+)", path):
            subject, version = unquote(m.group(1)), m.group(2)
            versions = st.subjects.get(subject)
            if not versions:
                return self._missing("subject")
            index = len(versions) if version in ("latest", "-1") else int(version)
            if not 0 < index <= len(versions):
                return self._missing("version", 40402)
            return self._send(200, st.answer(versions[index - 1], subject))
        if path.startswith("/config") or path.startswith("/mode"):
            return self._send(200, {"compatibilityLevel": "NONE", "mode": "READWRITE"})
        return self._missing("resource", 404)

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        st = self.state
        if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
            return self._send(200, {"id": st.register(unquote(m.group(1)), body)})
        if m := re.fullmatch(r"/subjects/([^/]+)", path):
            subject = unquote(m.group(1))
            entry = st.canonical(body)
            for schema_id in st.subjects.get(subject, []):
                known = st.schemas[schema_id - 1]
                if known["schema"] == entry["schema"] and known["schemaType"] == entry["schemaType"]:
                    return self._send(200, st.answer(schema_id, subject))
            return self._missing("schema", 40403)
        return self._missing("resource", 404)


class RegistryServer:
    """Runs the registry on 127.0.0.1 (a free port unless given) in a background thread."""

    def __init__(self, port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"state": _State()})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    server = RegistryServer(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.url, flush=True)
    threading.Event().wait()
