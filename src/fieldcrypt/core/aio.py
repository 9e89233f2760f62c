"""The asyncio twins' shell: a sync twin's record work, run on the event loop without blocking it.

    serializer = await AsyncAvroSerializer(async_registry, schema_str, conf=conf, keyring=keyring)
    data = await serializer(record, SerializationContext("orders", MessageField.VALUE))

An asyncio twin (``fieldcrypt.avro.AsyncAvroSerializer`` and the others) holds the sync twin of its format, built
on a :class:`RegistryView` of the ``AsyncSchemaRegistryClient`` and on the same keyring. Each call runs that sync
twin's record work in :func:`run`: attempts on the event loop inside a replay (``fieldcrypt.keys._loop``), where
every registry request is awaited on the async client and every cold key lookup on the keyring's async door
(:class:`fieldcrypt.keys.source.AsyncKeySource`: single flight per key, shielded from a caller's cancellation),
and the answers are kept for the call's next attempt. The record work exists once, so both twins write the same
bytes (with the same random source) and read each other's records, with the same conf keys, errors and stats.

A warm call (its keys cached, its schema known) runs in one attempt and never suspends. Work with no async door (a
Confluent CSFLE record handed to confluent's ENCRYPT executor, whose DEK registry client is blocking; a cold path
the lookups above do not cover) moves the call to the loop's default executor: there key lookups take the sync
door and registry requests are still made by the async client, on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from typing import Any, TypeVar

from confluent_kafka.serialization import SerializationContext

from fieldcrypt.core.confluent import is_async_strategy, track_original_key
from fieldcrypt.core.serde import refuse_unrun
from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys import _loop
from fieldcrypt.observe.stats import SerdeStats

__all__ = [
    "AsyncDeserializerTwin",
    "AsyncSerializerTwin",
    "AsyncTwin",
    "RegistryView",
    "built",
    "check_strategy",
    "confluent_part",
    "run",
]

T = TypeVar("T")
log = logging.getLogger("fieldcrypt.serde")

#: attempts on the loop before a call moves to the executor: each answers one request (a record's keys, its schema
#: lookups, a policy record per tagged field on a schema's first use), so this bounds the requests a call makes on
#: the loop; beyond it, the executor is cheaper than replaying
_ATTEMPTS = 256


async def run(call: Callable[[], T], stats: SerdeStats | None = None) -> T:
    """``call()`` (sync record work) on this event loop, its I/O awaited (see the module docstring). ``stats``: the
    serde's, told the key lookups that needed the key store."""
    loop = asyncio.get_running_loop()
    replay = _loop.Replay(loop)
    current = _loop._CURRENT
    token = current.set(replay)
    try:  # the first attempt, inline: a warm call ends here, without suspending
        return call()
    except _loop.SIGNALS as signal:
        first: BaseException = signal
    finally:
        current.reset(token)
    try:
        return await _attempts(loop, replay, call, first)
    finally:
        if replay.misses and stats is not None:
            stats._missed(replay.misses)


async def _attempts(
    loop: asyncio.AbstractEventLoop, replay: _loop.Replay, call: Callable[[], T], signal: BaseException
) -> T:
    """The attempts after the first, which stopped with ``signal``."""
    busy = 0
    current = _loop._CURRENT
    for _ in range(_ATTEMPTS):
        if isinstance(signal, _loop.OffLoop):
            break
        if isinstance(signal, _loop.Await):
            try:
                value = await signal.make()
            except Exception as exc:  # the request's own answer (a registry error, a shredded key...): raised in place
                replay.answers[signal.name] = (False, exc)
            else:
                replay.answers[signal.name] = (True, value)
        else:  # Busy: a lock another thread holds, not waited for on the loop
            busy += 1
            await asyncio.sleep(min(0.0005 * 2**busy, 0.05))
        token = current.set(replay)
        try:
            return call()
        except _loop.SIGNALS as again:
            signal = again
        finally:
            current.reset(token)
    log.debug("an asyncio serde call runs in the executor", extra={"event": "serde.off_loop"})
    context = contextvars.copy_context()
    try:
        return await loop.run_in_executor(None, partial(context.run, _off_loop, replay, call))  # type: ignore[arg-type]
    except asyncio.CancelledError:
        replay.abandoned = True  # the executor thread runs on: its next registry request ends it (_request)
        raise


def _off_loop(replay: _loop.Replay, call: Callable[[], T]) -> T | None:
    with _loop.running(replay):  # not this thread's loop: key lookups block here, registry requests go to the loop
        try:
            return call()
        except _loop.Abandoned:
            return None  # nobody waits for it


class RegistryView:
    """The registry client a sync twin inside an asyncio twin is built on: the ``AsyncSchemaRegistryClient``'s
    requests as calls answered by the running call's replay (or, off the loop, awaited on the loop from the executor
    thread); its other attributes (``config()``, its REST client's ``base_urls``) are the client's own."""

    __slots__ = ("_fieldcrypt_prefix", "fieldcrypt_async_client")

    def __init__(self, client: Any, prefix: str = "") -> None:
        object.__setattr__(self, "fieldcrypt_async_client", client)
        object.__setattr__(self, "_fieldcrypt_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fieldcrypt_async_client, name)
        if name == "_rest_client" and attr is not None:
            return RegistryView(attr, "rest.")
        if not callable(attr) or isinstance(attr, type):
            return attr
        return partial(_request, attr, self._fieldcrypt_prefix + name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __repr__(self) -> str:
        return f"RegistryView({self.fieldcrypt_async_client!r})"


def _request(fn: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
    if not inspect.iscoroutinefunction(fn):
        result = fn(*args, **kwargs)
        if not inspect.isawaitable(result):
            return result  # a plain method (config())
        if inspect.iscoroutine(result):
            result.close()  # an awaitable made by a plain function: made again below, where it is awaited

    def make() -> Any:
        return fn(*args, **kwargs)

    replay = _loop.current()
    if replay is not None:
        return _loop.answer(replay, ("registry", name, _frozen(args), _frozen(kwargs)), make)
    replay = _loop.active()
    if replay is not None:  # a call moved to the executor: the async client runs on its loop
        if _running_loop() is replay.loop:  # never wait on the loop from the loop itself (it would never answer)
            raise RuntimeError("fieldcrypt: a registry request of an asyncio serde would block its own event loop")
        return _from_loop(replay, make)
    raise ConfigurationError(
        f"the registry client of a fieldcrypt asyncio serde was asked ({name}) outside an awaited call"
    )


def _from_loop(replay: _loop.Replay, make: Callable[[], Any]) -> Any:
    """``await make()`` on the call's event loop, waited for from this executor thread; the call ends
    (:class:`fieldcrypt.keys._loop.Abandoned`) once its caller stopped waiting or the loop closed, before each request
    and while waiting, so an abandoned call never holds a thread for good nor finishes a record nobody receives."""
    if replay.abandoned or replay.loop.is_closed():
        raise _loop.Abandoned
    coroutine = _awaited(make)
    try:
        future = asyncio.run_coroutine_threadsafe(coroutine, replay.loop)
    except RuntimeError:  # the loop closed meanwhile
        coroutine.close()
        raise _loop.Abandoned from None
    while True:
        try:
            return future.result(timeout=0.05)
        except concurrent.futures.TimeoutError:
            if replay.abandoned or replay.loop.is_closed():
                future.cancel()
                raise _loop.Abandoned from None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _awaited(make: Callable[[], Any]) -> Any:
    return await make()


def _frozen(value: Any) -> Hashable:
    """A request argument as part of a request name: itself when hashable, else its type and repr (a ``Schema``'s
    repr holds every field it compares)."""
    if isinstance(value, tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    try:
        hash(value)
    except TypeError:
        return (type(value).__qualname__, repr(value))
    return value  # type: ignore[no-any-return]


async def built(make: Callable[[Any], T], registry: Any, conf: Any = None) -> T:
    """The sync twin an asyncio twin runs (``make(view)``), built on a view of the async ``registry`` (its
    constructor may ask the registry: the schema's references)."""
    check_strategy(conf)
    view = RegistryView(registry) if registry is not None else None
    return await run(partial(make, view))


def confluent_part(conf: Any) -> Any:
    """``conf`` without fieldcrypt's keys, for confluent's asyncio constructor (the sync twin has checked them all, and
    refused a conf that is no ``Mapping``): any ``Mapping`` becomes a dict of confluent's keys."""
    if conf is None:
        return None
    return {k: v for k, v in conf.items() if not (isinstance(k, str) and k.startswith("fieldcrypt."))}


def check_strategy(conf: Any) -> None:
    """A ``subject.name.strategy`` an asyncio serde would await (a coroutine function, or confluent's
    ``AsyncAssociatedNameStrategy``) is refused: the record work calls the strategy as confluent's sync serdes do.
    ``subject.name.strategy.type`` (``ASSOCIATED`` included) works as in confluent."""
    strategy = conf.get("subject.name.strategy") if isinstance(conf, Mapping) else None
    if strategy is None:
        return
    if is_async_strategy(strategy) or inspect.iscoroutinefunction(strategy):
        raise ConfigurationError(
            "subject.name.strategy: fieldcrypt's asyncio serdes call the strategy without awaiting it (as confluent's "
            "asyncio serdes call a strategy they were given); use subject.name.strategy.type (ASSOCIATED too) or a "
            "plain function"
        )


class AsyncTwin:
    """What the asyncio twins share (first among their bases): confluent's configuration methods, which confluent's
    asyncio producer and consumer call on the serdes they are given, reach the sync twin that does the work too."""

    _fieldcrypt: Any

    def set_async_cluster_id_resolver(self, resolver: Callable[[], Any]) -> None:
        super().set_async_cluster_id_resolver(resolver)  # type: ignore[misc]
        twin = getattr(self, "_fieldcrypt", None)
        if twin is not None:  # the sync twin's strategy asks it through the running call's replay (None: no resolver)
            twin.set_cluster_id_resolver(None if resolver is None else partial(_request, resolver, "kafka cluster id"))

    def configure_validation_rules(self, conf: dict[str, Any]) -> None:
        refuse_unrun(conf)  # (as the sync twins: not run, so refused)
        super().configure_validation_rules(conf)  # type: ignore[misc]

    def configure_subject_name_strategy(
        self,
        subject_name_strategy_type: Any = None,
        subject_name_strategy_conf: Any = None,
        subject_name_strategy: Any = None,
    ) -> None:
        check_strategy({"subject.name.strategy": subject_name_strategy})
        super().configure_subject_name_strategy(  # type: ignore[misc]
            subject_name_strategy_type, subject_name_strategy_conf, subject_name_strategy
        )
        twin = getattr(self, "_fieldcrypt", None)
        if twin is not None:
            twin.configure_subject_name_strategy(
                subject_name_strategy_type, subject_name_strategy_conf, subject_name_strategy
            )


class AsyncSerializerTwin(AsyncTwin):
    """An asyncio serializer twin: ``await serializer(obj, ctx)`` runs the sync twin's record work (its ``_serialize``)
    on the loop, then remembers a record key as confluent's serializers do (here: the call may have run in the
    executor, whose context is a copy)."""

    stats: SerdeStats

    async def __call__(self, obj: object, ctx: SerializationContext | None = None) -> bytes | None:
        try:
            return await run(partial(self._fieldcrypt._serialize, obj, ctx), self.stats)
        finally:
            track_original_key(obj, ctx)


class AsyncDeserializerTwin(AsyncTwin):
    """An asyncio deserializer twin: ``await deserializer(data, ctx)`` runs the sync twin's record work on the loop."""

    stats: SerdeStats

    async def __call__(self, data: bytes | None, ctx: SerializationContext | None = None) -> Any:
        try:
            return await run(partial(self._fieldcrypt, data, ctx), self.stats)
        finally:
            track_original_key(data, ctx)  # as the serializer twin: the call may have run in a copied context
