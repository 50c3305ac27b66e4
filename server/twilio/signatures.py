"""X-Twilio-Signature: compute (for the simulator) and validate (for our webhooks).

Algorithm (https://www.twilio.com/docs/usage/webhooks/webhooks-security, twilio-python request_validator.py): the full URL Twilio called,
then for each form parameter name in sorted order, each of its values de-duplicated and sorted,
`name + value` appended; HMAC-SHA1 with the Auth Token; base64. JSON bodies instead carry
`bodySHA256=<hex sha256 of the raw body>` in the query and the URL alone is signed.

The string building and HMAC come from the official SDK's RequestValidator; the comparison is ours
(hmac.compare_digest: the SDK's `compare` returns early on a length mismatch) and so is the JSON
branch (the SDK raises TypeError when a str body arrives without bodySHA256; we answer False).

Ports: Twilio's back end is not consistent about the port, so a signature over the URL without the
port or with the scheme's default port added (:443 / :80) is accepted (SDK behaviour, vectors
py_removes_port_* / py_adds_port_*).

Known gap: twilio-node also accepts a WHATWG re-encoded query (vector node_special_characters_in_query,
`Body=It's+amazing`); like twilio-python we sign the raw URL string and do not.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator, get_signature_algorithm

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

FormParams = Mapping[str, str] | Mapping[str, Sequence[str]] | Iterable[tuple[str, str]]

__all__ = [
    "HMAC_SHA1",
    "HMAC_SHA256",
    "SIGNATURE_HEADER",
    "SIGNATURE_SETTINGS_HEADER",
    "body_sha256",
    "public_url",
    "sign",
    "signature_algorithm",
    "validate_form",
    "validate_json",
    "validate_request",
]


class _MultiParams(dict[str, list[str]]):
    """A dict of lists the SDK reads through `getlist` (its Django QueryDict branch)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def _multi(params: FormParams | None) -> _MultiParams:
    multi = _MultiParams()
    if params is None:
        return multi
    items: Iterable[tuple[str, object]]
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        multi.setdefault(name, []).extend(str(v) for v in values)
    return multi


def sign(url: str, params: FormParams | None, token: str, *, algorithm: str = HMAC_SHA1) -> str:
    """The signature Twilio would send for a request to `url` with these form params."""
    validator = RequestValidator(token)
    signature: str = validator.compute_signature(url, _multi(params), algorithm)
    return signature


def body_sha256(raw_body: bytes | str) -> str:
    data = raw_body.encode("utf-8") if isinstance(raw_body, str) else raw_body
    return hashlib.sha256(data).hexdigest()


def _url_variants(url: str) -> list[str]:
    """The URL without its port and with the scheme's default port (SDK add_port/remove_port)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host = hostport.rsplit(":", 1)[0] if port is not None else hostport
    prefix = f"{userinfo}@" if userinfo else ""
    without_port = urlunsplit(parts._replace(netloc=prefix + host))
    if port is None:
        default = 443 if parts.scheme == "https" else 80
        with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    else:
        with_port = url
    return [without_port, with_port]


def _matches(url: str, params: FormParams | None, signature: str, token: str, algorithm: str) -> bool:
    if not signature:
        return False
    multi = _multi(params)
    validator = RequestValidator(token)
    found = False
    for candidate in _url_variants(url):
        expected: str = validator.compute_signature(candidate, multi, algorithm)
        # Evaluate every variant (no short-circuit) and compare in constant time.
        found |= hmac.compare_digest(expected.encode("utf-8"), signature.encode("utf-8"))
    return found


def validate_form(
    url: str, params: FormParams | None, signature: str, token: str, *, algorithm: str = HMAC_SHA1
) -> bool:
    """True when `signature` is Twilio's signature of a form request to `url` with `params`."""
    if algorithm.upper() not in (HMAC_SHA1, HMAC_SHA256):
        return False
    return _matches(url, params, signature, token, algorithm.upper())


def validate_json(
    url: str, raw_body: bytes | str, signature: str, token: str, *, algorithm: str = HMAC_SHA1
) -> bool:
    """JSON-body variant: `bodySHA256` must be in the URL, match the body, and the URL alone is signed."""
    if algorithm.upper() not in (HMAC_SHA1, HMAC_SHA256):
        return False
    claimed = parse_qs(urlsplit(url).query).get("bodySHA256")
    if not claimed:
        return False  # twilio-node rejects; twilio-python would raise TypeError (vector node_body_without_sha_param_fails)
    body_ok = hmac.compare_digest(body_sha256(raw_body).encode(), claimed[0].encode())
    url_ok = _matches(url, None, signature, token, algorithm.upper())
    return body_ok and url_ok


def signature_algorithm(settings_header: str | None) -> str:
    """HMAC_SHA1 unless X-Twilio-Webhooks-Signature-Settings names another (Webhook Rules, SharedKey)."""
    algorithm: str = get_signature_algorithm(settings_header)
    return algorithm.upper()


def public_url(public_base_url: str, path: str, query: str = "") -> str:
    """The URL Twilio called, rebuilt from our configured public base URL (behind a proxy the request
    we see says http://10.0.0.5:8000/...; Twilio signed https://connector.example.com/...).

    `path` and `query` are taken raw, as received, never re-encoded (Twilio signs the URL exactly as it called it).
    """
    base = public_base_url.rstrip("/")
    base_parts = urlsplit(base)
    full_path = base_parts.path + (path if path.startswith("/") else "/" + path)
    return urlunsplit((base_parts.scheme, base_parts.netloc, full_path, query, ""))


def validate_request(
    *,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    content_type: str | None,
    auth_token: str,
    shared_key_secret: str | None = None,
) -> bool:
    """Validate a webhook as received: form or JSON body, SHA1 (auth token) or SHA256 (SharedKey).

    `headers` must be case-insensitive (e.g. Litestar's or httpx's Headers) or use canonical names.
    """
    signature = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower()) or ""
    settings = headers.get(SIGNATURE_SETTINGS_HEADER) or headers.get(SIGNATURE_SETTINGS_HEADER.lower())
    algorithm = signature_algorithm(settings)
    token = auth_token
    if algorithm == HMAC_SHA256:
        if not shared_key_secret:
            return False
        token = shared_key_secret
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return validate_json(url, body, signature, token, algorithm=algorithm)
    if media_type in ("", FORM_CONTENT_TYPE):
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return False
        return validate_form(url, pairs, signature, token, algorithm=algorithm)
    return False
