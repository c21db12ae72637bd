"""Schemathesis hooks for scripts/contract: what a schema cannot say, and the network rule.

Loaded through SCHEMATHESIS_HOOKS=contract_hooks. Three rules a JSON schema cannot express are applied to
requests schemathesis generates as valid, so a valid request stays valid; the server still checks each one
(the Rust tests cover the refusals):
  * `expires_at` must lie in the future;
  * `expires_at` and `expires_in` are not both given;
  * an edge's `public_key` must encode a point on the Ed25519 curve.
And every webhook URL points at localhost, unless the run is isolated in a network namespace of its own
(QUENCH_CONTRACT_ISOLATED=1): a webhook the manager accepted would otherwise be delivered to whatever host
schemathesis made up.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import schemathesis

FUTURE = "2999-01-28T00:00:00Z"
# The Ed25519 base point: a valid public key.
CURVE_POINT = "58" + "66" * 31
ISOLATED = os.environ.get("QUENCH_CONTRACT_ISOLATED") == "1"


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


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if label == "POST /v1/webhooks" and not ISOLATED:
        _loopback(body)
    if not _positive(case):
        return
    if label in ("POST /v1/keys", "POST /v1/keys/{id}/rotate"):
        _expiry(body)
    elif label == "POST /v1/edges" and isinstance(body.get("public_key"), str):
        body["public_key"] = CURVE_POINT
