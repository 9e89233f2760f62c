"""Key stores by URL scheme: the registry, which may import the drivers (sqlite.py, postgres.py, plugins in the
``fieldcrypt.keystore`` entry-point group), while the drivers import only the base (store.py). Public as
``fieldcrypt.open_store`` and ``fieldcrypt.create_key_store``."""

from __future__ import annotations

from importlib.metadata import entry_points

from fieldcrypt.errors import ConfigurationError
from fieldcrypt.keys.store import KeyStore, check_role, redact_url

__all__ = ["create_key_store", "grant_role", "open_store"]


def _scheme(url: object) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"key store {redact_url(url) if isinstance(url, str) else type(url).__name__!r} is not a URL; "
            "use sqlite:///PATH, postgresql://... or a plugin's scheme"
        )
    return url.split("://", 1)[0].lower()


def open_store(url: str, *, create: bool = False) -> KeyStore:
    """Open the key store a URL names. It must exist (see :func:`create_key_store`) unless ``create=True``, which
    creates it, or upgrades its tables to this version's, and is what ``fieldcrypt keys init`` calls.

    Raises ``ConfigurationError`` for an unknown scheme and for a store that does not exist."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        from fieldcrypt.keys.sqlite import SqliteKeyStore

        return SqliteKeyStore(url, create=create)
    if scheme in ("postgresql", "postgres"):
        from fieldcrypt.keys.postgres import PostgresKeyStore

        return PostgresKeyStore(url, create=create)
    for ep in entry_points(group="fieldcrypt.keystore"):
        if ep.name == scheme:
            store = ep.load()(url)
            if not isinstance(store, KeyStore):
                raise ConfigurationError(f"key store plugin {scheme!r} did not return a KeyStore")
            if create:
                store.initialize()
            return store
    raise ConfigurationError(
        f"no key store for scheme {scheme}://; known: sqlite://, postgresql://, and 'fieldcrypt.keystore' entry points"
    )


def create_key_store(url: str) -> str:
    """Create the key store a URL names (a new SQLite file is mode 0600), or bring an existing one's tables up to
    this version; returns the URL. Idempotent: an existing store keeps every key. The API twin of
    ``fieldcrypt keys init --store URL``."""
    open_store(url, create=True).close()
    return url


def grant_role(url: str, role: str, dbrole: str) -> list[str]:
    """Give the database role ``dbrole`` of the key store at ``url`` what the fieldcrypt ``role`` may do:
    ``producer``, ``consumer``, ``admin`` or ``auditor`` (docs/least-privilege.md); returns the statements run.
    Run by the store's owner; GRANTs only (idempotent). The API twin of
    ``fieldcrypt keys grant --role ROLE DBROLE --store URL``. SQLite stores are single-user: a ``ConfigurationError``
    says so."""
    check_role(role)
    store = open_store(url)
    try:
        return store.grant(role, dbrole)
    finally:
        store.close()
