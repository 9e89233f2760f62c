"""Plans compiled into specialised Python functions: the serde hot path for the common record shape.

A plan whose root is a record of tagged values (each a string, bytes or base64 leaf, nullable or not; no masked view,
no deterministic value, no recursion, no pattern or extra keys) is compiled, once per plan, into one function per
direction that walks that record with straight-line code: no per-field loop, no per-value objects, the paths' parts
of the associated data computed once. The functions produce exactly what the general walker (``PlanRunner``)
produces, byte for byte (the frozen wire vectors hold for both), and handle only the plain case: any value of
another shape, any key they cannot use, any ciphertext that is not an intact version-2 value of this record returns
``SLOW`` before anything is written, and the general walker runs the record instead, with its exact errors, outcomes
and counts.

The generated source holds no string from the schema or the registry: field names, paths, domains and defaults are
bound as constants of the function's namespace (``_n0``, ``_p0``, ...), never spelled into the code, so whoever
registers a schema chooses no code. Only indexes and the shape of the plan decide the source.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from fieldcrypt.core.plan import MISSING, FieldPlan, Leaf, NullableNode, RecordNode
from fieldcrypt.crypto import wire as _wire
from fieldcrypt.errors import AccessDeniedError, EncryptionError, FieldcryptError, KeyNotFoundError

__all__ = ["SLOW", "compile_decrypt", "compile_encrypt"]

#: what a compiled function returns for a record it leaves to the general walker
SLOW: Any = object()

_MAX_FIELDS = 64  # beyond: the general walker (the source grows with the fields; 64 values keep every index < 128)


def _leaves(plan: FieldPlan) -> list[tuple[str, Leaf, Any]] | None:
    """(field name, leaf, default) per step of a plain root record, else None. (A nullable leaf's value in Avro's
    tuple notation is not a str or bytes: the compiled functions leave it to the general walker.)"""
    root = plan.root
    if not isinstance(root, RecordNode) or root.patterns or root.extra is not None:
        return None
    if not root.steps or len(root.steps) > _MAX_FIELDS:
        return None
    out = []
    for step in root.steps:
        node = step.node.child if isinstance(step.node, NullableNode) else step.node
        if not isinstance(node, Leaf) or node.deterministic or node.mask is not None:
            return None
        if node.kind not in ("string", "bytes", "base64"):
            return None
        out.append((step.name, node, step.default))
    return out


def _build(source: str, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    code = compile(source, f"<fieldcrypt compiled plan: {name}>", "exec")
    exec(code, namespace)  # the source is made from indexes alone (module docstring); constants are in namespace
    fn: Callable[..., Any] = namespace[name]
    return fn


def compile_encrypt(plan: FieldPlan, root_path: str, engine: Any) -> Callable[[Any, Any], Any] | None:
    """``enc(record, state) -> out | SLOW`` for a plan of the plain shape (module docstring), else None.

    ``engine``: the ``fieldcrypt.core.engine`` module (its ``_urandom`` is looked up per record, so the wire vectors
    can pin it; its key helpers renew and fetch keys as the general walker does)."""
    leaves = _leaves(plan)
    if leaves is None:
        return None
    ns: dict[str, Any] = {
        "_M": MISSING,
        "_SLOW": SLOW,
        "_eng": engine,
        "_kw": engine._key_for_write,
        "_renew": engine._renew,
        "_next": next,
        "_pack": _wire._LEN.pack,
        "_low": _wire._LEN.unpack_from,
        "_b2a": binascii.b2a_base64,
        "_I0": _wire.varint(0),
        "_V": tuple(_wire.varint(i) for i in range(128)),
        "_ENC": engine._ENC_ERRORS,
        "_fail": _encrypt_failed,
        "_b64d": _wire.decode_base64,
        "_NONCE": _wire.NONCE_LEN,
    }
    wraps = {"string": _wire.encode_text, "bytes": bytes, "base64": _wire.encode_base64}
    one_domain = len({leaf.domain for _, leaf, _ in leaves}) == 1
    head = ["def enc(v, st):", "    if type(v) is not dict:", "        return _SLOW", "    get = v.get"]
    body: list[str] = []
    for j, (name, leaf, default) in enumerate(leaves):
        ns[f"_n{j}"] = name
        ns[f"_l{j}"] = leaf
        ns[f"_p{j}"] = _wire.path_ad(f"{root_path}.{name}")
        ns[f"_w{j}"] = wraps[leaf.kind]
        head.append(f"    x = get(_n{j}, _M)")
        if default is MISSING:
            head += ["    if x is _M:", f"        d{j} = _M", "    elif x is None:", f"        d{j} = None"]
        else:
            ns[f"_df{j}"] = default
            head += ["    if x is _M:", f"        x = _df{j}", "    if x is None:", f"        d{j} = None"]
        if leaf.kind == "bytes":
            head += ["    elif type(x) is bytes:", f"        d{j} = x"]
        else:
            convert = "x.encode()" if leaf.kind == "string" else "_b64d(x)"
            error = "UnicodeEncodeError" if leaf.kind == "string" else "ValueError"
            head += [
                "    elif type(x) is str:",
                "        try:",
                f"            d{j} = {convert}",
                f"        except {error}:",
                "            return _SLOW",
            ]
        head += ["    else:", "        return _SLOW"]
        if leaf.domain is None:
            domain = "st.default_domain"
        else:
            ns[f"_dm{j}"] = leaf.domain
            domain = f"_dm{j}"
        # one key domain for every value (the common case): the key and what the values take from it are looked up
        # once per record (again only when its budget is spent); else per value, from the record's keys
        lookup, bind = (
            f"k = keys.get({domain}) or _kw(_l{j}, st)",
            "e, hk, pre = k.cipher.encrypt, k.header2, k.ad_prefix2 + tail",
        )
        rebind = " " * 12 + bind
        fetch = (
            ["        if k is None:", " " * 12 + lookup, rebind] if one_domain else [" " * 8 + lookup, " " * 8 + bind]
        )
        body += [
            f"    if d{j} is None:",
            f"        out[_n{j}] = None",
            f"    elif d{j} is not _M:",
            *fetch,
            "        while _next(k.budget[0], None) is None:",
            f"            k = _renew(_l{j}, st, k)",
            rebind,
            "        if i:",
            "            nonce = r8 + _pack(low ^ i)",  # crypto.wire.derive_nonce
            "            h = hk + _V[i]",
            "        else:",
            "            nonce = st.nonce = _eng._urandom(_NONCE)",
            "            r8, low = nonce[:8], _low(nonce, 8)[0]",
            "            h = hk + _I0 + nonce + cnt",
            "        try:",
            f"            ct = e(nonce, d{j}, pre + _p{j})",
            "        except _ENC:",
            f"            raise _fail(_l{j}, st, k) from None",
            (
                f'        out[_n{j}] = _b2a(h + ct, newline=False).rstrip(b"=").decode()'  # crypto.wire.encode_text
                if leaf.kind == "string"
                else f"        out[_n{j}] = _w{j}(h + ct)"
            ),
            "        i += 1",
        ]
    count = " + ".join(f"(type(d{j}) is bytes)" for j in range(len(leaves)))
    source = "\n".join(
        [
            *head,
            "    out = dict(v)",
            f"    n = {count}",
            "    cnt = _pack(n)",  # crypto.wire.count_field
            "    tail = st.ident + cnt",
            "    keys = st.keys",
            "    i = 0",
            "    r8 = low = k = None",
            *body,
            "    st.count = n",
            "    return out",
            "",
        ]
    )
    return _build(source, ns, "enc")


def _encrypt_failed(leaf: Leaf, st: Any, key: Any) -> Exception:
    return EncryptionError(
        "the value could not be encrypted", subject=st.subject, field_path=leaf.path, key_id=key.key_id
    )


def compile_decrypt(plan: FieldPlan, root_path: str, engine: Any) -> Callable[[Any, Any], Any] | None:
    """``dec(record, state) -> record | SLOW`` for a plan of the plain shape: decrypts, in place, a freshly decoded
    record whose tagged values are all intact version-2 values of one record, under keys this reader holds for the
    expected domain and person. Anything else (plaintext, another format, an unreadable, erased or denied value,
    tampering) returns ``SLOW`` with the record untouched; the state's lookup counts are the caller's to reset
    (the state is fresh: zero)."""
    leaves = _leaves(plan)
    if leaves is None:
        return None
    ns: dict[str, Any] = {
        "_SLOW": SLOW,
        "_a2b": binascii.a2b_base64,
        "_CL": _wire._CANONICAL_LAST,
        "_PAD": ("", "", "==", "="),
        "_b64d": _wire.decode_base64,
        "_b64e": _wire.encode_base64,
        "_u32": _wire._LEN.unpack_from,
        "_pack": _wire._LEN.pack,
        "_MIN": _wire._MIN_LEN_V2,
        "_MIN0": _wire._MIN_LEN_V2_FIRST,
        "_DEC": (*engine._DEC_ERRORS, ValueError, TypeError, AttributeError),
        "_OUT": (KeyNotFoundError, AccessDeniedError),
        "_ERR": FieldcryptError,
    }
    one_domain = len({leaf.domain for _, leaf, _ in leaves}) == 1
    unwraps = {
        "string": [  # crypto.wire.decode_text: canonical unpadded base64 only
            "            m = len(x) & 3",
            "            if m == 1 or (m and x[-1] not in _CL[m]) or '=' in x:",
            "                return _SLOW",
            "            b = _a2b((x + _PAD[m]).encode('ascii'), strict_mode=True)",
        ],
        "bytes": ["            b = x"],
        "base64": ["            b = _b64d(x)"],
    }
    kinds = {"string": "str", "bytes": "bytes", "base64": "str"}
    lines = [
        "def dec(v, st):",
        "    if type(v) is not dict:",
        "        return _SLOW",
        "    get = v.get",
        "    keyring = st.keyring",
        "    leaf = None",
        "    last = None",
        "    i = 0",
        "    r = r8 = low = n = None",
        "    try:",
    ]
    tails: list[str] = []
    for j, (name, leaf, _default) in enumerate(leaves):
        ns[f"_n{j}"] = name
        ns[f"_l{j}"] = leaf
        ns[f"_p{j}"] = _wire.path_ad(f"{root_path}.{name}")
        if leaf.domain is None:
            domain = "st.default_domain"
        else:
            ns[f"_dm{j}"] = leaf.domain
            domain = f"_dm{j}"
        out = "pt.decode()" if leaf.kind == "string" else ("pt" if leaf.kind == "bytes" else "_b64e(pt)")
        lines += [
            f"        x = get(_n{j})",
            "        if x is None:",
            f"            t{j} = None",
            f"        elif type(x) is not {kinds[leaf.kind]}:",
            "            return _SLOW",
            "        else:",
            *unwraps[leaf.kind],
            # crypto.wire.parse_value's common case: version 2, no flags, a one-byte index (this value's position)
            "            if len(b) < _MIN or b[0] != 2 or b[1] or b[6] != i:",
            "                return _SLOW",
            "            kid = _u32(b, 2)[0]",
            "            if i:",
            "                nonce, body = r8 + _pack(low ^ i), b[7:]",  # crypto.wire.derive_nonce
            "            else:",
            "                if len(b) < _MIN0:",
            "                    return _SLOW",
            "                r = nonce = b[7:19]",
            "                r8, low = r[:8], _u32(r, 8)[0]",
            "                n, body = _u32(b, 19)[0], b[23:]",
            "                tail = st.ident + b[19:23]",
            "            if last is None or last.key_id != kid:",
            "                st.lookups += 1",
            f"                leaf = _l{j}",
            "                last = keyring.decryption_key(kid, st)",
            # the key's owner: checked when it is looked up, when every value has the same domain; else per value
            *(
                [
                    f"                if last.domain != {domain} or last.person != st.person:",
                    "                    return _SLOW",
                ]
                if one_domain
                else []
            ),
            "                decrypt, pre = last.cipher.decrypt, last.ad_prefix2 + tail",
            *(
                []
                if one_domain
                else [
                    f"            if last.domain != {domain} or last.person != st.person:",
                    "                return _SLOW",
                ]
            ),
            f"            pt = decrypt(nonce, body, pre + _p{j})",
            f"            t{j} = {out}",
            "            i += 1",
        ]
        tails.append(f"    if t{j} is not None:\n        v[_n{j}] = t{j}")
    lines += [
        "    except _OUT:",  # erased, denied, never stored: the general walker says which, with the outcomes
        "        return _SLOW",
        "    except _ERR as exc:",  # the key store or KMS failed: as the general walker, not asked a second time
        "        raise exc.with_context(subject=st.subject, field_path=leaf.path) from exc",
        "    except _DEC:",  # not an intact version-2 value: plaintext, tampering, another format
        "        return _SLOW",
        "    if i != (n or 0) or st.outcomes.min_version > 2:",
        "        return _SLOW",
        *tails,
        "    st.count = i",
        "    if i:",
        "        st.version = 2",
        "        st.nonce = r",
        "        st.total = n",
        "        st.last_key = last",
        "    return v",
        "",
    ]
    return _build("\n".join(lines), ns, "dec")


def compile_screen(
    texts: list[str], others: list[str], full: Callable[[Any], Any], text_range: tuple[str, str]
) -> Callable[[Any], Any]:
    """``screen(record) -> full(record) | None`` for decoded records of one schema: ``texts`` name the fields always
    read as a ``str``, ``others`` those that may hold anything but a number or a bool (a union, a container,
    bytes, a logical type); the fields left out hold numbers or bools only. A record in which no text field falls in
    ``text_range`` and no other field holds text in it, bytes or a container, holds no value ``full`` (the walk of
    ``fieldcrypt.core.lookalike.candidates``) would find: None, without the walk. Anything else: ``full(record)``.
    Any record not a dict, or missing a field: ``full(record)``. The source is built from indexes alone."""
    ns: dict[str, Any] = {"_full": full, "_lo": text_range[0], "_hi": text_range[1]}
    lines = ["def screen(v):", "    if type(v) is not dict:", "        return _full(v)", "    try:"]
    for j, name in enumerate(others):
        ns[f"_o{j}"] = name
        lines += [
            f"        x = v[_o{j}]",
            "        t = type(x)",
            "        if t is str:",
            "            if _lo <= x < _hi:",
            "                return _full(v)",
            "        elif t is bytes or t is dict or t is list or t is tuple:",
            "            return _full(v)",
        ]
    if texts:  # one expression for every text field
        ns.update({f"_t{j}": name for j, name in enumerate(texts)})
        tests = " or ".join(f"_lo <= v[_t{j}] < _hi" for j in range(len(texts)))
        lines += [f"        if {tests}:", "            return _full(v)"]
    lines += ["    except (KeyError, TypeError):", "        return _full(v)", "    return None", ""]
    return _build("\n".join(lines), ns, "screen")
