"""Schemathesis hooks for scripts/contract: what a schema cannot say, GitHub's signatures, the network rule.

Loaded through SCHEMATHESIS_HOOKS=contract_hooks. Three rules a JSON schema cannot express are applied to
requests schemathesis generates as valid, so a valid request stays valid; the server still checks each one
(the Rust tests cover the refusals):
  * `expires_at` must lie in the future;
  * `expires_at` and `expires_in` are not both given;
  * an edge's `public_key` must encode a point on the Ed25519 curve (registration and rotation), and a
    registration's `ack_key` needs `ack_key_proof`, a signature by that key (so valid ones carry neither);
  * a token confined to an owner cannot hold `edge`.
The embedded edge's key is never rotated away, so confirmations keep arriving for the rest of the run.
Reports to the GitHub secret-scanning endpoint that carry both signature headers are signed, as GitHub
would sign them, with the throwaway P-256 key the manager was started to trust
(QUENCH_CONTRACT_GITHUB_KEY), so that their bodies reach the parser; a report missing a header is sent as
generated and meets a 401.
And every webhook URL points at localhost:9, which the script allows past the address guard
(`--webhook-allow 127.0.0.0/8`): a webhook the manager accepted would otherwise be refused by the guard, or
delivered to whatever host schemathesis made up.

`python3 scripts/contract_hooks.py github-keys` prints the public keys document for that key, in
GitHub's format, for `quench up --github-public-keys`; it needs no schemathesis.
"""

import base64
import hashlib
import json
import os
import secrets
import sys
from urllib.parse import urlsplit, urlunsplit

FUTURE = "2999-01-28T00:00:00Z"
# The Ed25519 base point: a valid public key.
CURVE_POINT = "58" + "66" * 31
GITHUB_PATH = "/v1/integrations/github/secret-scanning"
GITHUB_KEY_ID = "quench-contract"
GITHUB_ID_HEADER = "Github-Public-Key-Identifier"
GITHUB_SIGNATURE_HEADER = "Github-Public-Key-Signature"

# NIST P-256: y^2 = x^3 - 3x + b over GF(P), base point G of prime order N.
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
# DER SubjectPublicKeyInfo up to the uncompressed point: id-ecPublicKey, prime256v1, a 66-byte bit string.
SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def _add(p, q):
    """Adds two affine points; None is the point at infinity."""
    if p is None:
        return q
    if q is None:
        return p
    (x1, y1), (x2, y2) = p, q
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p == q:
        slope = (3 * x1 * x1 - 3) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _multiply(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _der_integer(value):
    # Big-endian, minimal, with a leading zero byte where the top bit would read as a sign.
    octets = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return bytes([0x02, len(octets)]) + octets


def sign(private, message):
    """An ECDSA P-256 SHA-256 signature over `message`, DER-encoded, with a low S."""
    digest = int.from_bytes(hashlib.sha256(message).digest(), "big")
    while True:
        k = secrets.randbelow(N - 1) + 1
        r = _multiply(k, G)[0] % N
        s = pow(k, -1, N) * (digest + r * private) % N
        if r and s:
            s = min(s, N - s)
            content = _der_integer(r) + _der_integer(s)
            return bytes([0x30, len(content)]) + content


def public_key_pem(private):
    x, y = _multiply(private, G)
    der = SPKI_PREFIX + b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join(["-----BEGIN PUBLIC KEY-----", *lines, "-----END PUBLIC KEY-----", ""])


def _github_private():
    return int(os.environ["QUENCH_CONTRACT_GITHUB_KEY"], 16)


def github_document(private):
    keys = [{"key_identifier": GITHUB_KEY_ID, "key": public_key_pem(private), "is_current": True}]
    return json.dumps({"public_keys": keys})


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _expiry(body):
    if isinstance(body.get("expires_at"), str):
        body["expires_at"] = FUTURE
    if body.get("expires_at") is not None and body.get("expires_in") is not None:
        del body["expires_in"]


def _loopback(body):
    url = body.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return
    parts = urlsplit(url)
    body["url"] = urlunsplit((parts.scheme, "localhost:9", parts.path, parts.query, parts.fragment))


def _sign_github(case, kwargs):
    """Sends the body as the bytes it is signed over, as GitHub does."""
    headers = case.headers
    if not headers or GITHUB_ID_HEADER not in headers or GITHUB_SIGNATURE_HEADER not in headers:
        return
    if not isinstance(case.body, (list, dict, str, int, float, bool, type(None))):
        return
    try:
        # What `requests` would send for `json=`, so the body is the one generated.
        payload = json.dumps(case.body, allow_nan=False).encode("utf-8")
    except ValueError:
        return
    signature = base64.b64encode(sign(_github_private(), payload)).decode()
    headers[GITHUB_ID_HEADER] = GITHUB_KEY_ID
    headers[GITHUB_SIGNATURE_HEADER] = signature
    kwargs["data"] = payload


def before_call(ctx, case, kwargs):
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if label == "POST /v1/edges/{id}/rotate" and (case.path_parameters or {}).get("id") == "embedded":
        # Rotating the one live edge's key away would leave every later `wait=all` waiting out its
        # timeout; another id exercises the same code (404, or a rotation of an edge that is not live).
        case.path_parameters["id"] = "contract-edge"
    if label == f"POST {GITHUB_PATH}":
        _sign_github(case, kwargs)
    body = case.body
    if not isinstance(body, dict):
        return
    if label == "POST /v1/webhooks":
        _loopback(body)
    if not _positive(case):
        return
    if label in ("POST /v1/keys", "POST /v1/keys/{id}/rotate"):
        _expiry(body)
    elif label in ("POST /v1/edges", "POST /v1/edges/{id}/rotate") and isinstance(
        body.get("public_key"), str
    ):
        body["public_key"] = CURVE_POINT
        # An `ack_key` is taken only with `ack_key_proof`, the edge's signature over it by the private
        # half of `public_key`, which no schema can generate: a valid registration is one without them.
        body.pop("ack_key", None)
        body.pop("ack_key_proof", None)
    elif label == "POST /v1/tokens" and body.get("owner") is not None:
        scopes = body.get("scopes")
        if isinstance(scopes, list) and "edge" in scopes:
            kept = [scope for scope in scopes if scope != "edge"]
            body["scopes"] = kept or ["keys:read"]


if __name__ == "__main__":
    if sys.argv[1:] != ["github-keys"]:
        sys.exit("usage: contract_hooks.py github-keys  (with QUENCH_CONTRACT_GITHUB_KEY set)")
    print(github_document(_github_private()))
else:
    import schemathesis

    before_call = schemathesis.hook(before_call)
