"""fieldcrypt with an AWS KMS key as the KEK: the data keys in the key store are wrapped by KMS. One tagged record
is encrypted and read back; then the KEK is rotated to a second KMS key (`rewrap`) and the record read again.

    python examples/kms_aws.py --key-arn arn:aws:kms:REGION:ACCOUNT:key/KEY-ID --new-key-arn ARN
    python examples/kms_aws.py --create-keys [--region eu-west-1]   # two new KMS keys, deleted after 7 days

Needs Tink's AWS integration (`pip install 'tink[awskms]'`) and AWS credentials from boto3's usual chain
(environment, profile, instance or task role) allowed kms:Encrypt and kms:Decrypt on both keys (and
kms:CreateKey, kms:ScheduleKeyDeletion with --create-keys). The region is taken from each key's ARN.
AWS_ENDPOINT_URL_KMS points boto3 at another KMS endpoint: tests/test_docs.py runs this file against moto's.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

import fieldcrypt
from fieldcrypt.avro import AvroDeserializer, AvroSerializer

SCHEMA = """{
  "type": "record", "name": "Customer", "namespace": "example.shop",
  "fields": [
    {"name": "customerId", "type": "string", "confluent:tags": ["DATA_SUBJECT_ID"]},
    {"name": "email", "type": "string", "confluent:tags": ["PII"]},
    {"name": "country", "type": "string"}
  ]
}"""
RECORD = {"customerId": "cust-042", "email": "jane.doe@example.com", "country": "DE"}
CTX = SerializationContext("customers", MessageField.VALUE)


@dataclass
class Result:
    kek_uri: str
    new_kek_uri: str
    data: bytes  # the record as written to Kafka
    read: dict[str, Any]  # read back with the first KEK
    read_after_rewrap: dict[str, Any]  # read back with the second KEK only, after rewrap
    kek_uris_in_store: set[str]  # which KEK wraps each stored data key, after rewrap


# --8<-- [start:client]
def kek_from_client(kms_client: Any, key_arn: str) -> fieldcrypt.Kek:
    """A KEK that calls KMS through your own boto3 client (its credentials, endpoint, retries and timeouts).
    Pass it to Keyring(store, kek) where a KEK URI would go."""
    from tink.integration import awskms

    uri = f"aws-kms://{key_arn}"
    return fieldcrypt.Kek(uri, awskms.new_client(boto3_client=kms_client, key_uri=uri).get_aead(uri))


# --8<-- [end:client]


def run(key_arn: str, new_key_arn: str, state: Path) -> Result:
    kek_uri = f"aws-kms://{key_arn}"  # what --kek and FIELDCRYPT_KEK take
    new_kek_uri = f"aws-kms://{new_key_arn}"
    store = fieldcrypt.create_key_store(f"sqlite:///{state / 'keys.db'}")  # `fieldcrypt keys init --store URL`
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})  # or your registry's URL

    # 1. write and read with the KMS key as KEK: a new data key is wrapped by one kms:Encrypt call,
    #    and unwrapped by one kms:Decrypt call per process (then cached for cache_ttl)
    with fieldcrypt.Keyring(store, kek_uri) as keyring:
        data = AvroSerializer(registry, SCHEMA, keyring=keyring)(RECORD, CTX)
        assert RECORD["email"].encode() not in data, "the tagged field must not be written in clear"
    with fieldcrypt.Keyring(store, kek_uri) as keyring:
        read = AvroDeserializer(registry, keyring=keyring)(data, CTX)

    # 2. rotate the KEK: re-wrap every data key under the new KMS key (`fieldcrypt keys rewrap --kek NEW
    #    --old-kek OLD`); no Kafka data is read or written, and the record written above still reads
    with fieldcrypt.Keyring(store, [new_kek_uri, kek_uri]) as keyring:
        rewrapped = keyring.rewrap(reason="KEK rotation")
        print(f"rewrapped {rewrapped} data key(s) under {new_kek_uri}")
    with fieldcrypt.Keyring(store, new_kek_uri) as keyring:
        read_after_rewrap = AvroDeserializer(registry, keyring=keyring)(data, CTX)
        in_store = {record.kek_uri for record in keyring.keys()}
    # the old KMS key no longer unwraps anything: it can be disabled, then scheduled for deletion
    with fieldcrypt.Keyring(store, kek_uri) as keyring:
        try:
            AvroDeserializer(registry, keyring=keyring)(data, CTX)
            raise AssertionError("the old KEK still unwraps a rewrapped data key")
        except fieldcrypt.AccessDeniedError as exc:
            print(f"with the old KEK only: {type(exc).__name__}: {exc}")
    return Result(kek_uri, new_kek_uri, data, read, read_after_rewrap, in_store)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key-arn", help="the KMS key to use as KEK")
    ap.add_argument("--new-key-arn", help="the KMS key to rotate the KEK to")
    ap.add_argument("--create-keys", action="store_true", help="create both keys; schedule their deletion after")
    ap.add_argument("--region", default=None, help="for --create-keys (default: boto3's, e.g. $AWS_REGION)")
    args = ap.parse_args(argv)
    if args.create_keys == bool(args.key_arn and args.new_key_arn):
        ap.error("give --key-arn and --new-key-arn, or --create-keys")

    kms = boto3.client("kms", region_name=args.region) if args.create_keys else None
    if kms is not None:
        created = [kms.create_key(Description="fieldcrypt example KEK")["KeyMetadata"] for _ in range(2)]
        arns = [key["Arn"] for key in created]
    else:
        created, arns = [], [args.key_arn, args.new_key_arn]
    try:
        result = run(arns[0], arns[1], Path(tempfile.mkdtemp(prefix="fieldcrypt-kms-")))
    finally:
        for key in created:  # by key id: moto 5.2 fails ScheduleKeyDeletion given an ARN (AWS accepts both)
            kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert result.read == RECORD and result.read_after_rewrap == RECORD
    assert result.kek_uris_in_store == {result.new_kek_uri}
    print(f"KEK {result.kek_uri}: wrote {len(result.data)} bytes, email encrypted, read back: {result.read}")
    print("OK")


if __name__ == "__main__":
    main()
