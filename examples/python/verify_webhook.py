"""Verify a Hookline webhook in Python, with the standard library only.

    python3 verify_webhook.py <secret> <body-file> <headers-json-file> [<previous-secret>]

prints "valid" (exit 0) or "invalid: ..." (exit 1; one message for every reason, as a receiver
would not tell a caller which check failed). The headers file is a
JSON object of the request's headers (any letter case); during a secret rotation, give the
secret being replaced as well (X-Signature is made with the newest secret only). Imported, it also gives the guide's
WebhookSignature (sign, verify, verify_raw), keyed by the contract's rule.
"""
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time


def webhook_key(secret: str) -> bytes:
    """A whsec_ secret's key is its base64-decoded part; any other secret's key is its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode("utf-8")


def verify_x_signature(secret: str, body: bytes, signature: str) -> bool:
    """X-Signature: sha256=<hex HMAC-SHA256 of the raw body> (the guide's verify_raw)."""
    if not signature or not isinstance(signature, str):
        return False
    given = signature.strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256="):]
    expected = hmac.new(webhook_key(secret), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.lower())


def _lowered(headers) -> "dict | None":
    """The headers by lower-case name, or None for what is no mapping of names (a list, say)."""
    try:
        return {k.lower(): v for k, v in headers.items()}
    except (AttributeError, TypeError, ValueError):
        return None


def verify_standard_webhook(secret: str, body: bytes, headers: dict, tolerance: int = 300) -> bool:
    """webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">, space-separated."""
    h = _lowered(headers)
    if h is None:
        return False
    msg_id, timestamp, signatures = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    # Unix seconds: a few ASCII digits (str.isdigit() also takes "²", which int() refuses, and
    # hundreds of digits overflow the float the tolerance is reckoned in).
    if not all(isinstance(v, str) and v for v in (msg_id, timestamp, signatures)):
        return False  # missing, or not text (a hand-written headers file's number, say)
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old (a replay) or too far in the future
    try:
        signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    except UnicodeEncodeError:
        return False  # a lone surrogate in the id: no request's bytes
    expected = base64.b64encode(hmac.new(webhook_key(secret), signed, hashlib.sha256).digest())
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a forged header's),
    # which must be a mismatch, not an exception.
    return any(
        hmac.compare_digest(expected, part[3:].encode("utf-8", "replace"))
        for part in signatures.split()
        if part.startswith("v1,")
    )


def verify_webhook(secret, body: bytes, headers: dict, tolerance: int = 300) -> bool:
    """Both schemes, as the TypeScript receiver does. `body` is the raw request body, not a re-serialised parse.

    `secret` is the subscription's secret, or during a rotation a list of the secrets to accept (the
    new one and the old): each scheme passes when it verifies with one of them."""
    h = _lowered(headers)
    if h is None:
        return False
    secrets = [secret] if isinstance(secret, str) else list(secret)

    def one_of(check) -> bool:
        for s in secrets:
            try:
                if check(s):
                    return True
            except (binascii.Error, ValueError, TypeError, UnicodeError):
                pass  # a whsec_ secret that is not base64, or a non-ASCII header value
        return False

    return one_of(lambda s: verify_x_signature(s, body, h.get("x-signature", ""))) and one_of(
        lambda s: verify_standard_webhook(s, body, h, tolerance)
    )


def _payload_bytes(payload) -> bytes:
    """bytes as they are, a str as its UTF-8, anything else as compact JSON (json.dumps, no spaces).

    That is JSON.stringify's text for strings, integers, lists and objects, but not for every
    float: Python writes 1500.0 and 1.5e-07 where JSON.stringify writes 1500 and 1.5e-7, so a
    signature made here over such a payload differs from the TypeScript helper's. Sign and verify
    the raw body (sign_raw, verify_raw) to agree byte for byte."""
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class WebhookSignature:
    """The guide's helper (its Test 2 and receiver), with the contract's key rule: a drop-in for
    `from app.modules.webhooks.utils import WebhookSignature`. Receivers use verify_raw on the raw body."""

    @staticmethod
    def sign_raw(secret: str, body: bytes) -> str:
        return "sha256=" + hmac.new(webhook_key(secret), body, hashlib.sha256).hexdigest()

    @staticmethod
    def sign(secret: str, payload) -> str:
        return WebhookSignature.sign_raw(secret, _payload_bytes(payload))

    @staticmethod
    def verify(secret: str, payload, signature: str) -> bool:
        """As sign made it, from this payload: a receiver verifies the raw body instead (verify_raw),
        as Python writes some numbers (1.5e-07) otherwise than JSON.stringify (1.5e-7)."""
        try:
            body = _payload_bytes(payload)
        except (TypeError, ValueError):
            return False  # no JSON for it, or a lone surrogate UTF-8 cannot encode
        return WebhookSignature.verify_raw(secret, body, signature)

    @staticmethod
    def verify_raw(secret: str, body, signature: str) -> bool:
        try:
            return verify_x_signature(secret, _payload_bytes(body) if isinstance(body, str) else body, signature)
        except (binascii.Error, ValueError, TypeError):
            return False  # a whsec_ secret that is not base64, a signature that is not ASCII, a lone surrogate


if __name__ == "__main__":
    secret_arg, body_path, headers_path = sys.argv[1:4]
    accepted = [secret_arg] + sys.argv[4:5]  # and the previous secret, during a rotation
    with open(body_path, "rb") as f:
        raw = f.read()
    with open(headers_path, encoding="utf-8") as f:
        received = json.load(f)
    if verify_webhook(accepted, raw, received):
        print("valid")
    else:
        print("invalid: the signature does not match, a header is missing, or the timestamp is outside the tolerance")
        sys.exit(1)
