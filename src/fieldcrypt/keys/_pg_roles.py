"""Least privilege in the PostgreSQL key store: the producers' write functions and the four fieldcrypt roles.

Producers write only through the SECURITY DEFINER functions below, created by ``initialize()`` and owned by the
role that ran it (the store's owner). Each does exactly one thing, with the same semantics as the plain SQL of
:class:`fieldcrypt.keys._sql.SqlKeyStore` (which SQLite keeps), its ``search_path`` pinned to the store's schema
(then ``pg_temp``), and ``EXECUTE`` revoked from PUBLIC:

================================  =========================================================================
``fieldcrypt_create_key``         the active key of (domain, person), or its next version (a creation, or a
                                  rotation by age or cap: ``retire``), with its audit entry
``fieldcrypt_create_branch``      the same for a domain's branch key, under the domain's recorded primary KEK
``fieldcrypt_reserve``            charge a lease within the cap: a count only grows, never past the cap
``fieldcrypt_claim_domain``       record a new domain's KEK (first writer wins), with its audit entry; a domain
                                  whose keys another KEK wraps is left to an admin (``accept_held``)
``fieldcrypt_publish_policy``     record a policy unless one is recorded (first writer wins)
``fieldcrypt_merge_policy``       add items to a recorded set (never removes one)
================================  =========================================================================

A key is wrapped outside the database (the keyring's KMS call, or a branch key): a creation calls its function
twice in one transaction (the store's advisory lock held from the first call): first without a wrapped key, to
learn the (id, version) to wrap for, then with the key wrapped for exactly that pair. The function checks
everything again on the second call and inserts only a key wrapped for the id and version it would give now.

No role but the owner and admins holds INSERT, UPDATE or DELETE on a table: a producer cannot overwrite a wrapped
key (a shred without DELETE), lower a count (reset a cap) or delete a key, and nobody can change the audit log (a
trigger refuses UPDATE and DELETE, whoever asks) or remove an entry of the shred log (only its owner could).
"""

from __future__ import annotations

from dataclasses import dataclass

from fieldcrypt.keys.store import ROLES

__all__ = ["ACTS", "FUNCTIONS", "GRANTS", "Act", "function_ddl", "signatures"]

#: (name, argument types) of every function producers call; ``to_regprocedure`` finds them by this signature
FUNCTIONS = (
    (
        "fieldcrypt_create_key",
        "text, text, text, double precision, bigint, bigint, bigint, bigint, integer, bytea, "
        "double precision, text, text, text, text",
    ),
    (
        "fieldcrypt_create_branch",
        "text, text, double precision, bigint, bigint, integer, bytea, double precision, text, text, text",
    ),
    ("fieldcrypt_reserve", "bigint, bigint, bigint"),
    ("fieldcrypt_claim_domain", "text, text, double precision, double precision, text, text, text, text"),
    ("fieldcrypt_publish_policy", "text, text, double precision"),
    ("fieldcrypt_merge_policy", "text, text[], double precision"),
    (
        "fieldcrypt_add_pseudonym_key",
        "text, text, bytea, text, double precision, double precision, text, text",
    ),
)

#: helpers the functions call (never granted: they run as the functions' owner)
_HELPERS = (
    ("fieldcrypt_lock", "text, bytea"),
    ("fieldcrypt_unused_id", "bigint"),
    ("fieldcrypt_key_id", "bigint"),
    ("fieldcrypt_audit_field", "text"),
    (
        "fieldcrypt_audit_append",
        "double precision, text, text, text, text, text, text, text",
    ),
)

_READ = (
    "fieldcrypt_keys, fieldcrypt_branches, fieldcrypt_domains, fieldcrypt_shredded, fieldcrypt_policies, "
    "fieldcrypt_pseudonym_keys, fieldcrypt_meta"
)

#: what each fieldcrypt role is granted, as GRANT statements ({functions}: the producers' functions)
GRANTS: dict[str, tuple[str, ...]] = {  # one entry per role of ROLES
    "consumer": (f"GRANT SELECT ON {_READ} TO {{role}}",),
    "producer": (f"GRANT SELECT ON {_READ} TO {{role}}", "GRANT EXECUTE ON FUNCTION {functions} TO {role}"),
    # the pseudonym key is read wrapped: an auditor holding a KEK it is wrapped by computes pseudonyms (keys audit
    # --data-subject ID); one holding none reads pseudonyms only
    "auditor": (
        "GRANT SELECT ON fieldcrypt_audit, fieldcrypt_audit_seals, fieldcrypt_shredded, fieldcrypt_domains, "
        "fieldcrypt_pseudonym_keys, fieldcrypt_meta TO {role}",
        # which key ids the store holds, nothing else of a key (a receipt's keys: destroyed, or restored?)
        "GRANT SELECT (key_id) ON fieldcrypt_keys TO {role}",
    ),
    "admin": (
        f"GRANT SELECT ON {_READ}, fieldcrypt_audit, fieldcrypt_audit_seals TO {{role}}",
        "GRANT INSERT, UPDATE, DELETE ON fieldcrypt_keys TO {role}",
        # FOR SHARE (a rotation's check of its branch key) needs UPDATE; new branch keys come from the function
        "GRANT UPDATE, DELETE ON fieldcrypt_branches TO {role}",
        # a domain's KEKs: changed (kek add|promote|retire), or first recorded accepting those its keys name (map)
        "GRANT INSERT, UPDATE ON fieldcrypt_domains TO {role}",
        # a retired KEK's copy of its domain's pseudonym key (kek retire)
        "GRANT DELETE ON fieldcrypt_pseudonym_keys TO {role}",
        # the shred log and the audit log: appended to, never changed
        "GRANT INSERT ON fieldcrypt_shredded, fieldcrypt_audit, fieldcrypt_audit_seals TO {role}",
        "GRANT USAGE ON SEQUENCE fieldcrypt_audit_seq_seq TO {role}",
        "GRANT EXECUTE ON FUNCTION {functions} TO {role}",
    ),
}


@dataclass(frozen=True)
class Act:
    """What a key-store method does, as a permission error names it, and the fieldcrypt roles allowed to."""

    text: str
    roles: tuple[str, ...]


_READ_KEYS = Act("read data keys", ("consumer", "producer", "admin"))
_READ_DOMAINS = Act("read the KEKs of key domains", ("consumer", "producer", "auditor", "admin"))
_READ_SHREDS = Act("read the shred log", ("consumer", "producer", "auditor", "admin"))
_READ_POLICIES = Act("read recorded policies", ("consumer", "producer", "admin"))
_CREATE = Act("create keys", ("producer", "admin"))
_READ_PSEUDONYMS = Act("read the pseudonym key", ("consumer", "producer", "auditor", "admin"))
_POLICY = Act("record encryption policies", ("producer", "admin"))

#: the KeyStore methods of the PostgreSQL store, by what they do (a permission error names it)
ACTS: dict[str, Act] = {
    **dict.fromkeys(
        ("get", "active", "keys", "keys_of", "active_keys", "branch", "active_branch", "branches"), _READ_KEYS
    ),
    **dict.fromkeys(("domains_in_use", "kek_usage"), _READ_KEYS),
    **dict.fromkeys(("domain_keks", "domains"), _READ_DOMAINS),
    **dict.fromkeys(("shredded", "shredded_keys", "shredded_counts", "count_shredded", "shred_log"), _READ_SHREDS),
    "published_policy": _READ_POLICIES,
    **dict.fromkeys(("persons_form", "pseudonym_keys"), _READ_PSEUDONYMS),
    "add_pseudonym_key": Act("store the pseudonym key under a KEK", ("producer", "admin")),
    "drop_pseudonym_copy": Act("drop a retired KEK's copy of a pseudonym key", ("admin",)),
    "holds_persons": _READ_KEYS,
    "key_domains": _READ_KEYS,
    **dict.fromkeys(("audit_log", "audit_chain", "audit_seals"), Act("read the audit log", ("auditor", "admin"))),
    "add_seal": Act("seal the audit log", ("admin",)),
    "key_ids_held": Act("see which key ids the store holds", ("consumer", "producer", "auditor", "admin")),
    "create": _CREATE,
    "create_branch": _CREATE,
    "reserve": Act("charge encryption leases", ("producer", "admin")),
    "claim_domain": Act("record the KEK of a new key domain", ("producer", "admin")),
    "publish_policy": _POLICY,
    "merge_policy": _POLICY,
    "rotate": Act("rotate keys", ("admin",)),
    "shred": Act("shred keys", ("admin",)),
    "apply_shred_log": Act("re-apply a shred log (restore)", ("admin",)),
    "update_wrapped": Act("rewrap keys", ("admin",)),
    "update_branches": Act("rewrap branch keys", ("admin",)),
    "change_domain_keks": Act("change the KEKs of a key domain", ("admin",)),
    "append_audit": Act("write the audit log", ("admin",)),
}


def signatures(names: tuple[tuple[str, str], ...] = FUNCTIONS) -> str:
    """``name(types), ...`` for GRANT and REVOKE."""
    return ", ".join(f"{name}({types})" for name, types in names)


#: the body of every function; {schema}: the store's schema, quoted
_DDL = r"""
CREATE OR REPLACE FUNCTION fieldcrypt_lock(p_domain text, p_rest bytea) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, {schema}, pg_temp AS $$
    -- the advisory lock of (domain, rest): the first 8 bytes of sha256(domain NUL rest), as PostgresKeyStore's
    -- _lock_id computes them, so the functions and an admin's transactions serialize on the same locks
    SELECT pg_advisory_xact_lock(('x' || encode(substr(sha256(
        pg_catalog.convert_to(p_domain, 'UTF8'::name) || decode('00', 'hex') || p_rest), 1, 8), 'hex')
    )::bit(64)::bigint)
$$;

CREATE OR REPLACE FUNCTION fieldcrypt_audit_field(p text) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    -- a column as an audit entry's link covers it (fieldcrypt.keys.chain): its length, then its UTF-8 bytes
    SELECT CASE WHEN p IS NULL THEN int4send(-1)
                ELSE int4send(octet_length(convert_to(p, 'UTF8'::name))) || convert_to(p, 'UTF8'::name) END
$$;

CREATE OR REPLACE FUNCTION fieldcrypt_audit_append(
    p_at double precision, p_actor text, p_operation text, p_domain text, p_person text, p_key_ids text,
    p_reason text, p_detail text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, {schema}, pg_temp AS $$
DECLARE
    v_seq bigint;
    v_prev bytea;
BEGIN
    -- an entry the functions write, linked after the chain's head read under the chain's lock (held to commit), as
    -- PostgresKeyStore links an admin's entries (a function, not a trigger: a row trigger would make every COPY of
    -- a batch shred's entries insert row by row)
    IF p_at IS NULL OR p_at = 'NaN'::float8 OR p_at IN ('Infinity'::float8, '-Infinity'::float8) THEN
        RAISE EXCEPTION 'fieldcrypt_audit_append: the time of an audit entry must be a finite number'
            USING ERRCODE = '22023';
    END IF;
    PERFORM fieldcrypt_lock('fieldcrypt audit', pg_catalog.convert_to('chain', 'UTF8'::name));
    SELECT a.seq, a.hash INTO v_seq, v_prev FROM fieldcrypt_audit a ORDER BY a.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := decode(repeat('00', 32), 'hex');
    END IF;
    v_seq := v_seq + 1;
    INSERT INTO fieldcrypt_audit (seq, at, actor, operation, domain, person, key_ids, reason, detail, hash)
        VALUES (v_seq, p_at, p_actor, p_operation, p_domain, p_person, p_key_ids, p_reason, p_detail,
                sha256(COALESCE(v_prev, ''::bytea) || int8send(v_seq) || float8send(p_at)
                    || fieldcrypt_audit_field(p_actor) || fieldcrypt_audit_field(p_operation)
                    || fieldcrypt_audit_field(p_domain) || fieldcrypt_audit_field(p_person)
                    || fieldcrypt_audit_field(p_key_ids) || fieldcrypt_audit_field(p_reason)
                    || fieldcrypt_audit_field(p_detail)));
END $$;

DROP TRIGGER IF EXISTS fieldcrypt_audit_chain ON fieldcrypt_audit;

DROP FUNCTION IF EXISTS fieldcrypt_audit_chain();

CREATE OR REPLACE FUNCTION fieldcrypt_key_id(p_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, {schema}, pg_temp AS $$
    SELECT '0x' || lpad(to_hex(p_id), 8, '0')
$$;

CREATE OR REPLACE FUNCTION fieldcrypt_unused_id(p_proposed bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, {schema}, pg_temp AS $$
DECLARE
    v_id bigint := CASE WHEN p_proposed > 0 AND p_proposed < 4294967296 THEN p_proposed END;
BEGIN
    -- the proposed id if no key, branch key or shred-log entry holds it, else a random one that none does
    LOOP
        IF v_id IS NOT NULL AND v_id <> 0 AND NOT EXISTS (
            SELECT 1 FROM fieldcrypt_keys WHERE key_id = v_id
            UNION ALL SELECT 1 FROM fieldcrypt_shredded WHERE key_id = v_id
            UNION ALL SELECT 1 FROM fieldcrypt_branches WHERE branch_id = v_id) THEN
            RETURN v_id;
        END IF;
        v_id := ('x' || substr(md5(gen_random_uuid()::text), 1, 8))::bit(32)::bigint;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_create_key(
    p_domain text, p_person text, p_kek_uri text, p_now double precision, p_retire bigint, p_charge bigint,
    p_branch_id bigint, p_key_id bigint, p_version integer, p_wrapped bytea,
    p_at double precision, p_actor text, p_operation text, p_reason text, p_detail text)
RETURNS TABLE (status text, key_id bigint, version integer, kek_uri text, wrapped bytea,
               created_at double precision, state text, encryptions bigint, branch_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
#variable_conflict use_column
DECLARE
    cur fieldcrypt_keys%ROWTYPE;
    held boolean;
    v_kek text := p_kek_uri;
    v_version integer;
    v_id bigint;
BEGIN
    IF p_domain IS NULL OR p_person IS NULL OR p_kek_uri IS NULL OR p_now IS NULL OR p_at IS NULL
       OR p_actor IS NULL OR p_reason IS NULL OR p_detail IS NULL THEN
        RAISE EXCEPTION 'fieldcrypt_create_key: an argument is NULL' USING ERRCODE = '22004';
    END IF;
    IF p_operation IS DISTINCT FROM 'create' AND p_operation IS DISTINCT FROM 'rotate' THEN
        RAISE EXCEPTION 'fieldcrypt_create_key: operation must be create or rotate' USING ERRCODE = '22023';
    END IF;
    IF p_charge IS NULL OR p_charge < 0 OR p_charge > 2147483648 OR p_branch_id IS NULL OR p_branch_id < 0 THEN
        RAISE EXCEPTION 'fieldcrypt_create_key: charge or branch id out of range' USING ERRCODE = '22023';
    END IF;
    PERFORM fieldcrypt_lock(p_domain, pg_catalog.convert_to(p_person, 'UTF8'::name));
    SELECT * INTO cur FROM fieldcrypt_keys WHERE domain = p_domain AND person = p_person AND state = 'active';
    held := FOUND;
    IF held AND (p_retire IS NULL OR cur.key_id <> p_retire) THEN
        -- already there, or another process rotated it first
        RETURN QUERY SELECT 'existing', cur.key_id, cur.version, cur.kek_uri, cur.wrapped, cur.created_at,
            cur.state, cur.encryptions, cur.branch_id;
        RETURN;
    END IF;
    IF p_branch_id <> 0 THEN
        -- the row names the KEK of its branch key, as it is now; the lock makes a domain shred wait for this key
        SELECT kek_uri INTO v_kek FROM fieldcrypt_branches WHERE branch_id = p_branch_id AND domain = p_domain
            FOR SHARE;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'branch-gone', p_branch_id, NULL::integer, NULL::text, NULL::bytea,
                NULL::double precision, NULL::text, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM fieldcrypt_branches b WHERE b.domain = p_domain)
          OR EXISTS (SELECT 1 FROM fieldcrypt_domains d WHERE d.domain = p_domain AND d.primary_kek <> p_kek_uri) THEN
        -- a key wrapped by a KEK itself (a store client without branch keys): only under the domain's recorded
        -- primary KEK, and never in a domain whose keys branch keys wrap
        RAISE EXCEPTION 'fieldcrypt_create_key: a key wrapped by a KEK itself must name the domain''s primary KEK'
            USING ERRCODE = '22023';
    END IF;
    SELECT COALESCE(MAX(version), 0) + 1 INTO v_version FROM fieldcrypt_keys
        WHERE domain = p_domain AND person = p_person;
    v_id := fieldcrypt_unused_id(p_key_id);
    IF p_wrapped IS NULL OR v_id IS DISTINCT FROM p_key_id OR v_version IS DISTINCT FROM p_version THEN
        -- wrap a key for exactly this id and version, and call again (nothing written)
        RETURN QUERY SELECT 'wrap', v_id, v_version, NULL::text, NULL::bytea, NULL::double precision, NULL::text,
            NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF held THEN
        UPDATE fieldcrypt_keys SET state = 'retired' WHERE key_id = cur.key_id;
    END IF;
    INSERT INTO fieldcrypt_keys (key_id, domain, person, version, kek_uri, wrapped, created_at, state, encryptions,
                                 branch_id)
        VALUES (v_id, p_domain, p_person, v_version, v_kek, p_wrapped, p_now, 'active', p_charge, p_branch_id);
    PERFORM fieldcrypt_audit_append(p_at, p_actor, p_operation, p_domain, p_person,
        CASE WHEN held THEN fieldcrypt_key_id(cur.key_id) || ',' ELSE '' END || fieldcrypt_key_id(v_id),
        p_reason, p_detail);
    RETURN QUERY SELECT 'created', v_id, v_version, v_kek, p_wrapped, p_now, 'active'::text, p_charge, p_branch_id;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_create_branch(
    p_domain text, p_kek_uri text, p_now double precision, p_retire bigint, p_key_id bigint, p_version integer,
    p_wrapped bytea, p_at double precision, p_actor text, p_operation text, p_reason text)
RETURNS TABLE (status text, branch_id bigint, version integer, kek_uri text, wrapped bytea,
               created_at double precision, state text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
#variable_conflict use_column
DECLARE
    cur fieldcrypt_branches%ROWTYPE;
    held boolean;
    v_primary text;
    v_version integer;
    v_id bigint;
BEGIN
    IF p_domain IS NULL OR p_kek_uri IS NULL OR p_now IS NULL OR p_at IS NULL OR p_actor IS NULL
       OR p_reason IS NULL THEN
        RAISE EXCEPTION 'fieldcrypt_create_branch: an argument is NULL' USING ERRCODE = '22004';
    END IF;
    IF p_operation IS DISTINCT FROM 'create' AND p_operation IS DISTINCT FROM 'rotate' THEN
        RAISE EXCEPTION 'fieldcrypt_create_branch: operation must be create or rotate' USING ERRCODE = '22023';
    END IF;
    PERFORM fieldcrypt_lock(p_domain, decode('006272616e6368', 'hex'));  -- (domain, NUL 'branch')
    SELECT * INTO cur FROM fieldcrypt_branches WHERE domain = p_domain AND state = 'active';
    held := FOUND;
    IF held AND (p_retire IS NULL OR cur.branch_id <> p_retire) THEN
        RETURN QUERY SELECT 'existing', cur.branch_id, cur.version, cur.kek_uri, cur.wrapped, cur.created_at,
            cur.state;
        RETURN;
    END IF;
    -- under a share lock: an admin's change of the domain's KEKs waits for this commit, so a rewrap that follows
    -- finds this branch key
    SELECT primary_kek INTO v_primary FROM fieldcrypt_domains WHERE domain = p_domain FOR SHARE;
    IF FOUND AND v_primary <> p_kek_uri THEN
        -- promoted meanwhile: never a branch key under an old KEK (nothing written)
        RETURN QUERY SELECT 'kek-changed', NULL::bigint, NULL::integer, v_primary, NULL::bytea,
            NULL::double precision, NULL::text;
        RETURN;
    END IF;
    SELECT COALESCE(MAX(version), 0) + 1 INTO v_version FROM fieldcrypt_branches WHERE domain = p_domain;
    v_id := fieldcrypt_unused_id(p_key_id);
    IF p_wrapped IS NULL OR v_id IS DISTINCT FROM p_key_id OR v_version IS DISTINCT FROM p_version THEN
        RETURN QUERY SELECT 'wrap', v_id, v_version, NULL::text, NULL::bytea, NULL::double precision, NULL::text;
        RETURN;
    END IF;
    IF held THEN
        UPDATE fieldcrypt_branches SET state = 'retired' WHERE branch_id = cur.branch_id;
    END IF;
    INSERT INTO fieldcrypt_branches (branch_id, domain, version, state, kek_uri, wrapped, created_at)
        VALUES (v_id, p_domain, v_version, 'active', p_kek_uri, p_wrapped, p_now);
    PERFORM fieldcrypt_audit_append(p_at, p_actor, p_operation, p_domain, '',
        CASE WHEN held THEN fieldcrypt_key_id(cur.branch_id) || ',' ELSE '' END || fieldcrypt_key_id(v_id),
        p_reason, 'branch key, wrapped by ' || p_kek_uri);
    RETURN QUERY SELECT 'created', v_id, v_version, p_kek_uri, p_wrapped, p_now, 'active'::text;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_reserve(p_key_id bigint, p_count bigint, p_limit bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
DECLARE
    v_before bigint;
    v_granted bigint;
BEGIN
    IF p_count IS NULL OR p_count < 0 OR p_limit IS NULL OR p_limit < 0 THEN
        RAISE EXCEPTION 'fieldcrypt_reserve: count and limit must not be negative' USING ERRCODE = '22023';
    END IF;
    -- the row lock holds until commit, so concurrent charges add up exactly; the count only grows, and never
    -- past the limit asked for nor the hard cap (2^31: AES-GCM with random nonces)
    SELECT encryptions INTO v_before FROM fieldcrypt_keys WHERE key_id = p_key_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_granted := GREATEST(0, LEAST(p_count, LEAST(p_limit, 2147483648) - v_before));
    IF v_granted > 0 THEN
        UPDATE fieldcrypt_keys SET encryptions = v_before + v_granted WHERE key_id = p_key_id;
    END IF;
    RETURN v_granted;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_claim_domain(
    p_domain text, p_kek_uri text, p_now double precision, p_at double precision, p_actor text, p_operation text,
    p_person text, p_reason text)
RETURNS TABLE (domain text, primary_kek text, accepted text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_others text;
BEGIN
    IF p_domain IS NULL OR p_kek_uri IS NULL OR p_now IS NULL OR p_at IS NULL OR p_actor IS NULL
       OR p_person IS NULL OR p_reason IS NULL THEN
        RAISE EXCEPTION 'fieldcrypt_claim_domain: an argument is NULL' USING ERRCODE = '22004';
    END IF;
    IF p_operation IS DISTINCT FROM 'kek-map' THEN
        RAISE EXCEPTION 'fieldcrypt_claim_domain: operation must be kek-map' USING ERRCODE = '22023';
    END IF;
    PERFORM 1 FROM fieldcrypt_domains d WHERE d.domain = p_domain;
    IF NOT FOUND THEN
        -- keys another KEK wraps, with no record naming it: only an admin may accept them (plain SQL, accept_held)
        SELECT json_agg(u ORDER BY u COLLATE "C")::text INTO v_others FROM (
            SELECT kek_uri AS u FROM fieldcrypt_keys WHERE domain = p_domain AND branch_id = 0
            UNION SELECT kek_uri FROM fieldcrypt_branches WHERE domain = p_domain) t WHERE u <> p_kek_uri;
        IF v_others IS NOT NULL THEN  -- PostgresKeyStore.claim_domain says so first, naming them
            RAISE EXCEPTION 'key domain % holds keys wrapped by KEKs no record names: %', p_domain, v_others;
        END IF;
        INSERT INTO fieldcrypt_domains (domain, primary_kek, accepted, created_at)
            VALUES (p_domain, p_kek_uri, '[]', p_now) ON CONFLICT (domain) DO NOTHING;
        IF FOUND THEN
            PERFORM fieldcrypt_audit_append(p_at, p_actor, p_operation, p_domain, p_person, '', p_reason,
                'primary ' || p_kek_uri);
        END IF;
    END IF;
    RETURN QUERY SELECT d.domain, d.primary_kek, d.accepted FROM fieldcrypt_domains d
        WHERE d.domain = p_domain;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_publish_policy(p_fingerprint text, p_policy text, p_now double precision)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
DECLARE
    v_policy text;
BEGIN
    IF p_fingerprint IS NULL OR p_policy IS NULL OR p_now IS NULL THEN
        RAISE EXCEPTION 'fieldcrypt_publish_policy: an argument is NULL' USING ERRCODE = '22004';
    END IF;
    INSERT INTO fieldcrypt_policies (fingerprint, policy, created_at) VALUES (p_fingerprint, p_policy, p_now)
        ON CONFLICT (fingerprint) DO NOTHING;
    SELECT policy INTO v_policy FROM fieldcrypt_policies WHERE fingerprint = p_fingerprint;
    RETURN v_policy;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_add_pseudonym_key(
    p_domain text, p_kek_uri text, p_wrapped bytea, p_fingerprint text, p_now double precision,
    p_at double precision, p_actor text, p_reason text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
DECLARE
    v_fp text;
    v_primary text;
    v_accepted text;
BEGIN
    IF p_domain IS NULL OR p_kek_uri IS NULL OR p_wrapped IS NULL OR p_fingerprint IS NULL OR p_now IS NULL
       OR p_at IS NULL OR p_actor IS NULL OR p_reason IS NULL THEN
        RAISE EXCEPTION 'fieldcrypt_add_pseudonym_key: an argument is NULL' USING ERRCODE = '22004';
    END IF;
    -- a copy of the domain's one pseudonym key under another KEK; the first key stored is the domain's for good
    PERFORM fieldcrypt_lock(p_domain, pg_catalog.convert_to('pseudonyms', 'UTF8'::name));
    -- only under a KEK the store records for the domain (its first copy: under its primary), so one team's
    -- login cannot plant a key of its own making in another team's domain
    SELECT d.primary_kek, d.accepted INTO v_primary, v_accepted FROM fieldcrypt_domains d WHERE d.domain = p_domain;
    IF NOT FOUND OR NOT (p_kek_uri = v_primary
                         OR p_kek_uri IN (SELECT pg_catalog.jsonb_array_elements_text(v_accepted::jsonb))) THEN
        RAISE EXCEPTION 'fieldcrypt_add_pseudonym_key: KEK % is not recorded for key domain %', p_kek_uri, p_domain
            USING ERRCODE = '42501';
    END IF;
    SELECT fingerprint INTO v_fp FROM fieldcrypt_pseudonym_keys WHERE domain = p_domain LIMIT 1;
    IF FOUND AND v_fp <> p_fingerprint THEN
        RETURN v_fp;
    END IF;
    IF NOT FOUND AND p_kek_uri <> v_primary THEN
        RAISE EXCEPTION 'fieldcrypt_add_pseudonym_key: the first copy of a pseudonym key is under the primary KEK'
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO fieldcrypt_pseudonym_keys (domain, kek_uri, wrapped, fingerprint, created_at)
        VALUES (p_domain, p_kek_uri, p_wrapped, p_fingerprint, extract(epoch FROM clock_timestamp()))
        ON CONFLICT (domain, kek_uri) DO NOTHING;
    IF FOUND THEN
        PERFORM fieldcrypt_audit_append(p_at, p_actor, 'pseudonymize', p_domain, '', '', p_reason,
            'pseudonym key ' || p_fingerprint || ' wrapped by ' || p_kek_uri);
    END IF;
    RETURN p_fingerprint;
END $$;

CREATE OR REPLACE FUNCTION fieldcrypt_merge_policy(p_name text, p_items text[], p_now double precision)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp AS $$
DECLARE
    v_before text;
    v_after text;
BEGIN
    IF p_name IS NULL OR p_items IS NULL OR p_now IS NULL OR array_position(p_items, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'fieldcrypt_merge_policy: an argument is NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM fieldcrypt_lock(p_name, pg_catalog.convert_to('policy', 'UTF8'::name));
    SELECT policy INTO v_before FROM fieldcrypt_policies WHERE fingerprint = p_name;
    -- the union, sorted by code point (as Python sorts): items are added, never removed
    SELECT COALESCE(json_agg(item ORDER BY item COLLATE "C"), '[]'::json)::text INTO v_after FROM (
        SELECT json_array_elements_text(COALESCE(v_before, '[]')::json) AS item UNION SELECT unnest(p_items)) t;
    IF v_before IS NULL THEN
        INSERT INTO fieldcrypt_policies (fingerprint, policy, created_at) VALUES (p_name, v_after, p_now);
    ELSIF EXISTS (SELECT unnest(p_items) EXCEPT SELECT json_array_elements_text(v_before::json)) THEN
        UPDATE fieldcrypt_policies SET policy = v_after WHERE fingerprint = p_name;
    END IF;
    RETURN v_before;
END $$;
"""


def function_ddl(schema: str) -> list[str]:
    """The statements that create (or replace) the functions in ``schema`` (an identifier, already quoted), then
    take EXECUTE on each from PUBLIC (the default for a new function)."""
    statements = [s.strip() for s in _DDL.replace("{schema}", schema).split("\n\n") if s.strip()]
    statements.append(f"REVOKE ALL ON FUNCTION {signatures(FUNCTIONS + _HELPERS)} FROM PUBLIC")
    return statements


assert set(GRANTS) == set(ROLES)
