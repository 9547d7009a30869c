"""Verify a Hookline webhook in Python, with the standard library only.

    python3 verify_webhook.py <secret> <body-file> <headers-json-file>

prints "valid" (exit 0) or "invalid: <reason>" (exit 1). The headers file is a
JSON object of the request's headers (any letter case).
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
    if not signature:
        return False
    given = signature.strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256="):]
    expected = hmac.new(webhook_key(secret), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.lower())


def verify_standard_webhook(secret: str, body: bytes, headers: dict, tolerance: int = 300) -> bool:
    """webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">, space-separated."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, timestamp, signatures = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and timestamp and signatures) or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old (a replay) or too far in the future
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, part[3:]) for part in signatures.split() if part.startswith("v1,")
    )


def verify_webhook(secret: str, body: bytes, headers: dict, tolerance: int = 300) -> bool:
    """Both schemes, as the TypeScript receiver does. `body` is the raw request body, not a re-serialised parse."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        return verify_x_signature(secret, body, h.get("x-signature", "")) and verify_standard_webhook(
            secret, body, h, tolerance
        )
    except (binascii.Error, ValueError, TypeError):
        return False  # a whsec_ secret that is not base64, or a non-ASCII header value


if __name__ == "__main__":
    secret_arg, body_path, headers_path = sys.argv[1:4]
    with open(body_path, "rb") as f:
        raw = f.read()
    with open(headers_path, encoding="utf-8") as f:
        received = json.load(f)
    if verify_webhook(secret_arg, raw, received):
        print("valid")
    else:
        print("invalid: the signature does not match, a header is missing, or the timestamp is outside the tolerance")
        sys.exit(1)
