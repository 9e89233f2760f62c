"""Counters a serializer or deserializer keeps: ``serializer.stats`` and ``deserializer.stats`` (docs/observability.md).

    stats = deserializer.stats
    stats.records, stats.values_decrypted, stats.erased, stats.key_cache_misses, stats.key_store_seconds
    json.dumps(stats.as_dict())       # a consistent snapshot, plain data

Counts only: never a value, a plaintext, key material or a data-subject id. Key ids appear nowhere here either;
field paths (``plaintext_by_field``) and exception class names (``errors_by_type``) do.

Threads: a serde may be called from many threads at once. Each record counts into its own per-record state first
(no lock per value); the record's counts are added under this object's lock once, when the record is done, so
totals are exact and a snapshot (``as_dict``, ``snapshot``) never shows half a record. A key-store call is added
under the same lock when it returns. Reading single attributes without a snapshot is safe but may mix records.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any, Protocol


class RecordState(Protocol):
    """What the counters read from one record's engine state (``fieldcrypt.core.engine.RecordState`` has it): its
    value count, key lookups and misses, unreadable outcomes and the paths of plaintext values. Stated here, so
    observability needs nothing from the engine that feeds it."""

    count: int
    deterministic: int
    lookups: int
    misses: int
    erased: int
    denied: int
    plain: list[str] | None
    unreadable: list[tuple[bool, str]] | None
    masked: list[str] | None


__all__ = ["LATENCY_BUCKETS", "SerdeStats"]

#: upper bounds (seconds) of the key-store latency histogram's buckets; a last bucket holds the slower calls
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _no_buckets() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS) + 1)


@dataclass
class SerdeStats:
    """What one serializer or deserializer has done since it was made (or :meth:`reset`).

    Records: ``records`` returned (serialized or deserialized), of which ``records_tagged`` had a schema with
    tagged fields and ``records_untagged`` one without; ``errors`` refused (the call raised: encryption failed,
    tampered, malformed...), by exception class in ``errors_by_type``.

    Values: ``values`` ciphertext values handled (a serializer encrypted them; a deserializer found them: read,
    erased or denied), of which ``erased`` (key shredded) and ``denied`` (no access) were returned as the
    ``fieldcrypt.on.erased`` / ``on.denied`` outcome, per field path in ``erased_by_field`` / ``denied_by_field``
    (so a consumer holding the keys of some key domains sees which fields it cannot read); ``plaintext`` tagged
    values read as plaintext (``fieldcrypt.on.plaintext=accept``), per field path in ``plaintext_by_field``;
    ``untagged_ciphertext`` values of fields the record's schema does not tag that hold a fieldcrypt ciphertext of a
    key the key store knows, returned as they are (``fieldcrypt.on.untagged.ciphertext=accept``; a record re-framed
    with the id of a schema version without the tag), per field path (``$.email``) in
    ``untagged_ciphertext_by_field``. ``masked``: values this deserializer had no key for but read as their masked
    view (``fieldcrypt.masks``: it holds the key of the ``<domain>/masked`` domain), per field path in
    ``masked_by_field``; they count as readable, not as denied. Values of refused records are not counted.

    Keys: ``key_cache_hits`` / ``key_cache_misses``: data-key lookups this serde made (one per record and key,
    not one per value), answered from the keyring's memory (a key, or a cached "shredded", "unknown" or "no
    access") or needing the key store. ``key_store_*``: the calls to the key store or KEK (KMS) made for this
    serde, every attempt counted (retries too): count, attempts that failed as unavailable, total and slowest
    seconds, and a histogram over :data:`LATENCY_BUCKETS` (``key_store_latency``: calls per bucket, the last for
    calls slower than every bound). Lookups and calls of refused records are counted.
    """

    #: "serializer" or "deserializer" (set by the serde; "" for a standalone object)
    role: str = ""
    records: int = 0
    records_untagged: int = 0
    errors: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    values: int = 0
    erased: int = 0
    denied: int = 0
    plaintext: int = 0
    plaintext_by_field: dict[str, int] = field(default_factory=dict)
    untagged_ciphertext: int = 0
    untagged_ciphertext_by_field: dict[str, int] = field(default_factory=dict)
    key_lookups: int = 0
    key_cache_misses: int = 0
    key_store_calls: int = 0
    key_store_failures: int = 0
    key_store_seconds: float = 0.0
    key_store_max_seconds: float = 0.0
    key_store_latency: list[int] = field(default_factory=_no_buckets)
    # after every older field, so positional construction and the repr's order stay as they were
    erased_by_field: dict[str, int] = field(default_factory=dict)
    denied_by_field: dict[str, int] = field(default_factory=dict)
    masked: int = 0
    masked_by_field: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # not a dataclass field: dataclasses.asdict and SerdeStats(**asdict(s)) keep working
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy and pickle: every field, a lock of its own
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- derived ------------------------------------------------------------------------------------------------
    @property
    def values_encrypted(self) -> int:
        """Values a serializer encrypted (0 for a deserializer)."""
        return self.values if self.role == "serializer" else 0

    @property
    def values_decrypted(self) -> int:
        """Values a deserializer decrypted: found, minus erased and denied (0 for a serializer)."""
        return 0 if self.role == "serializer" else self.readable

    @property
    def readable(self) -> int:
        """Ciphertext values that were not erased or denied (a deserializer: the values it decrypted)."""
        return self.values - self.erased - self.denied

    @property
    def records_tagged(self) -> int:
        """Records whose schema has tagged fields (counted as ``records - records_untagged``: one step less per
        record on the hot path)."""
        return self.records - self.records_untagged

    @property
    def key_cache_hits(self) -> int:
        return self.key_lookups - self.key_cache_misses

    # -- snapshots ----------------------------------------------------------------------------------------------
    def snapshot(self) -> SerdeStats:
        """A consistent copy (whole records only), for deltas and reports."""
        with self._lock:
            return self._copy()

    def as_dict(self) -> dict[str, Any]:
        """A consistent snapshot as plain JSON-serializable data: every field, the derived counts, and
        ``key_store_latency`` as {upper bound: calls at most that slow} (cumulative, "+Inf" last)."""
        with self._lock:
            copy = self._copy()
        out: dict[str, Any] = {f.name: getattr(copy, f.name) for f in fields(copy)}
        out["records_tagged"] = copy.records_tagged
        out["values_encrypted"] = copy.values_encrypted
        out["values_decrypted"] = copy.values_decrypted
        out["readable"] = copy.readable
        out["key_cache_hits"] = copy.key_cache_hits
        bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
        out["key_store_latency"] = dict(zip(bounds, _cumulative(copy.key_store_latency), strict=True))
        return out

    def reset(self) -> None:
        """Zero every counter (``role`` stays)."""
        with self._lock:
            fresh = SerdeStats(self.role)
            for f in fields(self):
                setattr(self, f.name, getattr(fresh, f.name))

    def _copy(self) -> SerdeStats:
        values: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.copy() if isinstance(v, (dict, list)) else v
        return SerdeStats(**values)

    # -- counting (the serdes and the engine; not public) --------------------------------------------------------
    def _record(self, st: RecordState | None, untagged: list[str] | None = None) -> None:
        """One record returned; ``st``: its engine state (None when its schema tags nothing); ``untagged``: the
        field paths of the ciphertexts it holds in untagged fields (``fieldcrypt.core.lookalike``), if any."""
        lock = self._lock
        lock.acquire()
        try:
            self.records += 1
            if st is not None:
                self.values += st.count + st.deterministic
                self.key_lookups += st.lookups
                if st.misses:
                    self.key_cache_misses += st.misses
                if st.erased or st.denied:
                    self.erased += st.erased
                    self.denied += st.denied
                    for erased, path in st.unreadable or ():
                        by_path = self.erased_by_field if erased else self.denied_by_field
                        by_path[path] = by_path.get(path, 0) + 1
                masked = st.masked
                if masked:
                    self.masked += len(masked)
                    by_mask = self.masked_by_field
                    for p in masked:
                        by_mask[p] = by_mask.get(p, 0) + 1
                plain = st.plain
                if plain:
                    self.plaintext += len(plain)
                    by_field = self.plaintext_by_field
                    for p in plain:
                        by_field[p] = by_field.get(p, 0) + 1
            else:
                self.records_untagged += 1
            if untagged:
                self.untagged_ciphertext += len(untagged)
                seen = self.untagged_ciphertext_by_field
                for p in untagged:
                    seen[p] = seen.get(p, 0) + 1
        finally:
            lock.release()

    def _wrote(self, st: RecordState | None) -> None:
        """:meth:`_record` for a serializer (no outcomes or plaintext to count: fewer steps on the hot path)."""
        lock = self._lock
        lock.acquire()
        try:
            self.records += 1
            if st is not None:
                self.values += st.count + st.deterministic
                self.key_lookups += st.lookups
                if st.misses:
                    self.key_cache_misses += st.misses
            else:
                self.records_untagged += 1
        finally:
            lock.release()

    def _lookups(self, st: RecordState) -> None:
        """The key lookups of a record the engine refused (its values are not counted)."""
        with self._lock:
            self.key_lookups += st.lookups
            self.key_cache_misses += st.misses

    def _missed(self, misses: int) -> None:
        """Key lookups an asyncio serde's call made on the keyring's async door that needed the key store (the
        attempt that used the key found it cached: ``fieldcrypt.core.aio``)."""
        with self._lock:
            self.key_cache_misses += misses

    def _error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        with self._lock:
            self.errors += 1
            self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1

    # the keyring's KeyMeter protocol (fieldcrypt.keys.keyring): lookups made outside a record (policy checks)
    def key_miss(self) -> None:
        with self._lock:
            self.key_lookups += 1
            self.key_cache_misses += 1

    def key_store_call(self, seconds: float, failed: bool) -> None:
        i = 0
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                break
            i += 1
        with self._lock:
            self.key_store_calls += 1
            if failed:
                self.key_store_failures += 1
            self.key_store_seconds += seconds
            if seconds > self.key_store_max_seconds:
                self.key_store_max_seconds = seconds
            self.key_store_latency[i] += 1


def _cumulative(counts: list[int]) -> list[int]:
    total, out = 0, []
    for n in counts:
        total += n
        out.append(total)
    return out
