"""Merging the JSON reports of a scan or verify split across processes (``--partition``, one process per share of
the partitions, on one machine or many) into the report one process reading every partition gives.

Counts add up; the first partitions and offsets of each finding are kept in (partition, offset) order, up to the
limit one report keeps; a partition read by two reports, reports of two topics, of two kinds, or read with different
settings (detectors, record keys, decryption, ``--by``) are refused: their sum would not be one scan's answer.
What cannot be summed is said so: the distinct deterministic ciphertexts of a field are counted under a key of each
run, so a merged count is the largest share's, marked a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fieldcrypt.errors import ConfigurationError

__all__ = ["ReportError", "merge_reports"]

MAX_OFFSETS = 20  # as inspect.scan and inspect.verify keep per field
MAX_BAD = 20  # as inspect.topic.BadRecords keeps


#: the counts of a scan report's field, added up
_SUMMED_SCAN = ("values", "empty", "ciphertext", "with_view", "deterministic", "plaintext", "readable", "masked",
                "erased", "denied", "tampered", "unverified", "flagged")  # fmt: skip


class ReportError(ConfigurationError):
    """A report that cannot be merged: not one of ours, or not a share of the same reading."""


def _kind(report: Mapping[str, Any], name: str) -> str:
    if "subjects" in report and "detectors" in report:
        return "scan"
    if "rows" in report and "by" in report:
        return "verify"
    raise ReportError(f"{name}: not the JSON report of fieldcrypt scan or verify (--json)")


# -- what a report holds: checked whole before anything is added up (a count that is not one, a key no report
# -- writes, a value of another type: refused, naming the file and where)

_SCAN_TOP = {"topic", "partitions", "records", "tombstones", "keys_scanned", "decrypted", "detectors", "subjects",
             "bad_records", "findings", "clean", "run", "shards"}  # fmt: skip
_VERIFY_TOP = {"topic", "by", "data_subject", "partitions", "records", "tombstones", "rows", "untagged_ciphertext",
               "bad_records", "findings", "clean", "run", "shards"}  # fmt: skip
_FIELD_KEYS = {"field", "tagged", "schema_path", "detections", "offsets", "more_offsets", "distinct",
               "distinct_is_lower_bound", "most_frequent", *_SUMMED_SCAN}  # fmt: skip
_ROW_COUNTS = ("records", "readable", "masked", "erased", "denied", "tampered", "plaintext")


def _fail(name: str, where: str, what: str) -> ReportError:
    return ReportError(f"{name}: {where} {what}: not a report of fieldcrypt scan or verify (--json) as written")


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _counts(name: str, where: str, obj: Mapping[str, Any], keys: Iterable[str]) -> None:
    for k in keys:
        if k in obj and not _is_count(obj[k]):
            raise _fail(name, f"{where}.{k}", "is not a count")


def _required(name: str, where: str, obj: Mapping[str, Any], keys: Iterable[str]) -> None:
    for k in keys:
        if k not in obj:
            raise _fail(name, f"{where}.{k}", "is missing")


def _obj(name: str, where: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(name, where, "is not an object")
    return v


def _list(name: str, where: str, v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(name, where, "is not a list")
    return v


def _str(name: str, where: str, v: Any, none: bool = False) -> None:
    if not (isinstance(v, str) or (none and v is None)):
        raise _fail(name, where, "is not text")


def _only(name: str, where: str, obj: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(name, where, f"holds {extra[0]!r}, which no report holds")


def _check_offsets(name: str, where: str, obj: Mapping[str, Any]) -> None:
    for i, o in enumerate(_list(name, f"{where}.offsets", obj.get("offsets", []))):
        o = _obj(name, f"{where}.offsets[{i}]", o)
        _only(name, f"{where}.offsets[{i}]", o, {"partition", "offset"})
        if not (_is_count(o.get("partition")) and _is_count(o.get("offset"))):
            raise _fail(name, f"{where}.offsets[{i}]", "is not a partition and an offset")
    _counts(name, where, obj, ("more_offsets",))


def _check(name: str, r: dict[str, Any], kind: str) -> None:
    _only(name, "the report", r, _SCAN_TOP if kind == "scan" else _VERIFY_TOP)
    _str(name, "topic", r.get("topic"))
    _required(name, "the report", r, ("records", "bad_records"))
    _counts(name, "the report", r, ("records", "tombstones"))
    parts = _list(name, "partitions", r.get("partitions"))
    for i, span in enumerate(parts):
        span = _obj(name, f"partitions[{i}]", span)
        _only(name, f"partitions[{i}]", span, {"partition", "from", "to", "read"})
        if not all(_is_count(span.get(k)) for k in ("partition", "from", "to")):
            raise _fail(name, f"partitions[{i}]", "is not a partition with its offsets")
        _counts(name, f"partitions[{i}]", span, ("read",))
    if not parts and (r["records"] or r.get("tombstones")):
        raise _fail(name, "partitions", "is empty, yet records were read")
    bad = _obj(name, "bad_records", r.get("bad_records"))
    _only(name, "bad_records", bad, {"count", "by_reason", "first", "more"})
    _required(name, "bad_records", bad, ("count",))
    _counts(name, "bad_records", bad, ("count", "more"))
    for reason, n in _obj(name, "bad_records.by_reason", bad.get("by_reason", {})).items():
        if not _is_count(n):
            raise _fail(name, f"bad_records.by_reason.{reason}", "is not a count")
    for i, e in enumerate(_list(name, "bad_records.first", bad.get("first", []))):
        e = _obj(name, f"bad_records.first[{i}]", e)
        if not (_is_count(e.get("partition")) and _is_count(e.get("offset"))):
            raise _fail(name, f"bad_records.first[{i}]", "is not a partition and an offset")
        _str(name, f"bad_records.first[{i}].reason", e.get("reason"))
        _str(name, f"bad_records.first[{i}].detail", e.get("detail"))
        if any(not isinstance(v, (str, int, float, bool)) and v is not None for v in e.values()):
            raise _fail(name, f"bad_records.first[{i}]", "holds a value that is not text or a number")
    if kind == "scan":
        if not isinstance(r.get("keys_scanned"), bool) or not isinstance(r.get("decrypted"), bool):
            raise _fail(name, "keys_scanned or decrypted", "is not true or false")
        for i, d in enumerate(_list(name, "detectors", r.get("detectors"))):
            _str(name, f"detectors[{i}]", d)
        for i, sub in enumerate(_list(name, "subjects", r.get("subjects"))):
            where = f"subjects[{i}]"
            sub = _obj(name, where, sub)
            _only(name, where, sub, {"subject", "part", "schema_type", "schema_ids", "records", "fields"})
            _required(name, where, sub, ("records",))
            for k in ("subject", "part", "schema_type"):
                _str(name, f"{where}.{k}", sub.get(k))
            if not all(_is_count(x) for x in _list(name, f"{where}.schema_ids", sub.get("schema_ids", []))):
                raise _fail(name, f"{where}.schema_ids", "is not a list of schema ids")
            _counts(name, where, sub, ("records",))
            for j, f in enumerate(_list(name, f"{where}.fields", sub.get("fields", []))):
                fw = f"{where}.fields[{j}]"
                f = _obj(name, fw, f)
                _only(name, fw, f, _FIELD_KEYS)
                _required(name, fw, f, ("field", "tagged"))
                _str(name, f"{fw}.field", f.get("field"))
                _str(name, f"{fw}.schema_path", f.get("schema_path"), none=True)
                if not isinstance(f.get("tagged"), bool) or not isinstance(
                    f.get("distinct_is_lower_bound", False), bool
                ):
                    raise _fail(name, fw, "says tagged or distinct_is_lower_bound with something not true or false")
                _counts(name, fw, f, (*_SUMMED_SCAN, "distinct", "most_frequent"))
                for det, n in _obj(name, f"{fw}.detections", f.get("detections", {})).items():
                    if not _is_count(n):
                        raise _fail(name, f"{fw}.detections.{det}", "is not a count")
                _check_offsets(name, fw, f)
        return
    if r.get("by") not in ("domain", "data-subject"):
        raise _fail(name, "by", "is not domain or data-subject")
    if "data_subject" in r:
        _str(name, "data_subject", r["data_subject"])
        if r["by"] != "data-subject":
            raise _fail(name, "data_subject", "is given with by domain")
    for i, row in enumerate(_list(name, "rows", r.get("rows"))):
        row = _obj(name, f"rows[{i}]", row)
        names = {"domain", "key"} if r["by"] == "domain" else {r["by"]}
        _only(name, f"rows[{i}]", row, {*names, *_ROW_COUNTS, "plaintext_fields"})
        if r["by"] == "domain":
            _str(name, f"rows[{i}].domain", row.get("domain"), none=True)
            if row.get("key") not in ("known", "unknown", "none"):
                raise _fail(name, f"rows[{i}].key", "is not known, unknown or none")
        else:
            _str(name, f"rows[{i}].{r['by']}", row.get(r["by"]))
        _counts(name, f"rows[{i}]", row, _ROW_COUNTS)
        for n in _obj(name, f"rows[{i}].plaintext_fields", row.get("plaintext_fields", {})).values():
            if not _is_count(n):
                raise _fail(name, f"rows[{i}].plaintext_fields", "holds a count that is not one")
    for i, u in enumerate(_list(name, "untagged_ciphertext", r.get("untagged_ciphertext", []))):
        u = _obj(name, f"untagged_ciphertext[{i}]", u)
        _only(name, f"untagged_ciphertext[{i}]", u, {"subject", "field", "values", "offsets", "more_offsets"})
        _str(name, f"untagged_ciphertext[{i}].subject", u.get("subject"))
        _str(name, f"untagged_ciphertext[{i}].field", u.get("field"))
        if not _is_count(u.get("values")):
            raise _fail(name, f"untagged_ciphertext[{i}].values", "is not a count")
        _check_offsets(name, f"untagged_ciphertext[{i}]", u)


def merge_reports(reports: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The merged report of ``(name, parsed JSON)`` pairs (name: a file name, for errors)."""
    items = list(reports)
    if not items:
        raise ReportError("no report to merge")
    kinds = set()
    for name, report in items:
        if not isinstance(report, dict):
            raise ReportError(f"{name}: not a JSON object")
        kind = _kind(report, name)
        kinds.add(kind)
        _check(name, report, kind)  # whole, before anything is added up
    if len(kinds) > 1:
        raise ReportError("the reports mix scan and verify reports")
    kind = kinds.pop()
    first_name, first = items[0]
    topic = first["topic"]
    same = ("detectors", "keys_scanned", "decrypted") if kind == "scan" else ("by", "data_subject")
    seen: dict[int, str] = {}
    shards = []
    for name, r in items:
        if r.get("topic") != topic:
            raise ReportError(f"{name}: a report of topic {r.get('topic')!r}, the others of {topic!r}")
        for key in same:
            if r.get(key) != first.get(key):
                raise ReportError(f"{name}: read with {key}={r.get(key)!r}, {first_name} with {first.get(key)!r}")
        parts = []
        for span in r["partitions"]:
            p = span["partition"]
            if p in seen:
                raise ReportError(
                    f"partition {p} was read by {seen[p]} and by {name}: its records would be counted twice"
                )
            seen[p] = name
            parts.append(p)
        run = r.get("run") if isinstance(r.get("run"), dict) else {}
        shards.append(
            {
                "report": name,
                "partitions": sorted(parts),
                "records": r["records"],
                "seconds": run.get("seconds"),
                "records_per_second": run.get("records_per_second"),
            }
        )
    merged: dict[str, Any] = {
        "topic": topic,
        "partitions": sorted((span for _, r in items for span in r["partitions"]), key=lambda s: s["partition"]),
        "records": sum(s["records"] for s in shards),
        "tombstones": sum(r.get("tombstones", 0) for _, r in items),
    }
    if kind == "scan":
        merged.update({k: first[k] for k in same})
        merged["subjects"] = _merge_subjects(items)
    else:
        merged["by"] = first["by"]
        if first.get("data_subject") is not None:
            merged["data_subject"] = first["data_subject"]
        merged["rows"] = _merge_rows(items, first["by"])
        merged["untagged_ciphertext"] = _merge_untagged(items)
    merged["bad_records"] = _merge_bad(items)
    merged["findings"] = _findings(kind, merged)
    merged["clean"] = not any(merged["findings"].values())
    seconds = [s["seconds"] for s in shards if isinstance(s["seconds"], (int, float))]
    merged["shards"] = shards
    if seconds and len(seconds) == len(shards):
        wall = max(seconds)
        merged["run"] = {"seconds": wall, "records_per_second": round(merged["records"] / wall) if wall else None}
    return merged


def _offsets(entries: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Offsets of findings from every share, in (partition, offset) order, the first MAX_OFFSETS; and how many
    more there were (returned to be added to the shares' own ``more_offsets``)."""
    found = sorted({(o["partition"], o["offset"]) for e in entries for o in e.get("offsets", [])}, key=lambda po: po)
    kept = found[:MAX_OFFSETS]
    return [{"partition": p, "offset": o} for p, o in kept], len(found) - len(kept)


def _merge_subjects(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    subjects: dict[tuple[str, str], dict[str, Any]] = {}
    fields: dict[tuple[str, str], dict[tuple[str, bool], list[dict[str, Any]]]] = {}
    for _, r in items:
        for s in r["subjects"]:
            key = (s["subject"], s.get("part", "value"))
            found = subjects.get(key)
            if found is None:
                found = subjects[key] = {
                    "subject": s["subject"],
                    "part": key[1],
                    "schema_type": s.get("schema_type"),
                    "schema_ids": set(),
                    "records": 0,
                }
            elif s.get("schema_type") not in str(found["schema_type"]).split("+"):
                found["schema_type"] = f"{found['schema_type']}+{s.get('schema_type')}"
            found["schema_ids"].update(s.get("schema_ids", []))
            found["records"] += s["records"]
            for entry in s.get("fields", []):
                fields.setdefault(key, {}).setdefault((entry["field"], bool(entry["tagged"])), []).append(entry)
    out = []
    for key, s in sorted(subjects.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        merged_fields = []
        for _, shares in sorted(fields.get(key, {}).items(), key=lambda kv: (not kv[0][1], kv[0][0])):
            f: dict[str, Any] = {}
            for share in shares:
                for k, v in share.items():
                    if k in _SUMMED_SCAN:
                        f[k] = f.get(k, 0) + v
                    elif k == "detections":
                        d = f.setdefault("detections", {})
                        for det, n in v.items():
                            d[det] = d.get(det, 0) + n
                    elif k in ("distinct", "most_frequent"):  # per run keys: the largest share's, a lower bound
                        f[k] = max(f.get(k, 0), v)
                    elif k == "distinct_is_lower_bound":
                        f[k] = bool(f.get(k)) or bool(v)
                    elif k not in ("offsets", "more_offsets"):
                        f.setdefault(k, v)
            if "distinct" in f and sum(1 for share in shares if share.get("deterministic")) > 1:
                f["distinct_is_lower_bound"] = True  # digests under each run's own key: not comparable across runs
            if "detections" in f:
                f["detections"] = dict(sorted(f["detections"].items()))
            f["offsets"], more = _offsets(shares)
            f["more_offsets"] = more + sum(share.get("more_offsets", 0) for share in shares)
            ordered = {k: f[k] for k in shares[0] if k in f}  # the keys in one report's order
            merged_fields.append({**ordered, **{k: v for k, v in f.items() if k not in ordered}})
        out.append({**s, "schema_ids": sorted(s["schema_ids"]), "fields": merged_fields})
    return out


_SUMMED_ROW = ("records", "readable", "masked", "erased", "denied", "tampered", "plaintext")


def _merge_rows(items: list[tuple[str, Any]], by: str) -> list[dict[str, Any]]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for _, r in items:
        for row in r["rows"]:
            ident = tuple((k, row.get(k)) for k in ((by,) if by != "domain" else ("domain", "key")))
            found = rows.get(ident)
            if found is None:
                rows[ident] = found = {k: (0 if k in _SUMMED_ROW else v) for k, v in row.items()}
                found["plaintext_fields"] = {}
            for k in _SUMMED_ROW:
                if k in row:
                    found[k] += row[k]
            for path, n in row.get("plaintext_fields", {}).items():
                found["plaintext_fields"][path] = found["plaintext_fields"].get(path, 0) + n
    out = list(rows.values())
    for row in out:
        row["plaintext_fields"] = dict(sorted(row["plaintext_fields"].items()))
    if by != "domain":
        return sorted(out, key=lambda row: str(row.get(by)))
    order = {"known": 0, "unknown": 1, "none": 2}
    return sorted(out, key=lambda row: (order.get(str(row.get("key")), 3), str(row.get("domain"))))


def _merge_untagged(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, r in items:
        for u in r.get("untagged_ciphertext", []):
            found.setdefault((u["subject"], u["field"]), []).append(u)
    out = []
    for (subject, path), shares in sorted(found.items()):
        offsets, more = _offsets(shares)
        out.append(
            {
                "subject": subject,
                "field": path,
                "values": sum(u["values"] for u in shares),
                "offsets": offsets,
                "more_offsets": more + sum(u.get("more_offsets", 0) for u in shares),
            }
        )
    return out


def _merge_bad(items: list[tuple[str, Any]]) -> dict[str, Any]:
    count = 0
    by_reason: dict[str, int] = {}
    first: list[dict[str, Any]] = []
    for _, r in items:
        bad = r["bad_records"]
        count += bad["count"]
        for reason, n in bad.get("by_reason", {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + n
        first.extend(bad.get("first", []))
    first.sort(key=lambda e: (e["partition"], e["offset"]))
    first = first[:MAX_BAD]
    return {"count": count, "by_reason": dict(sorted(by_reason.items())), "first": first, "more": count - len(first)}


def _findings(kind: str, merged: dict[str, Any]) -> dict[str, int]:
    bad = merged["bad_records"]
    if kind == "scan":
        fields = [f for s in merged["subjects"] for f in s["fields"]]
        return {
            "plaintext_in_tagged_fields": sum(f.get("plaintext", 0) for f in fields),
            "personal_data_in_untagged_fields": sum(f.get("flagged", 0) for f in fields),
            "ciphertext_in_untagged_fields": sum(f.get("ciphertext", 0) for f in fields if not f["tagged"]),
            "tampered": sum(f.get("tampered", 0) for f in fields),
            "records_not_examined": bad["count"],
        }
    tampered = bad["by_reason"].get("tampered", 0)
    found = {
        "plaintext": sum(r.get("plaintext", 0) for r in merged["rows"]),
        "untagged_ciphertext": sum(u["values"] for u in merged["untagged_ciphertext"]),
        "tampered": tampered,
        "bad_records": bad["count"] - tampered,
    }
    if merged.get("data_subject") is not None:
        found["readable_of_data_subject"] = sum(r.get("readable", 0) for r in merged["rows"])
    return found
