"""API keys, optional: off unless FACADE_API_KEYS_FILE names a file of key hashes.

The file (a plain file natively; a Compose, Swarm or Kubernetes secret mounted as a file in
containers) holds one `sha256:<64 hex digits>` line per key; `#` lines and blank ones are
skipped. Only hashes are stored, so the file (or a leaked copy) does not give the keys away; the
keys are 32 random bytes, so a plain SHA-256 is as good as a slow hash against guessing.
`python -m facade.auth` prints a new key and its line.

With keys on, the classification routes (POST /, POST /predict) need `Authorization: Bearer
<key>`; a missing or unknown key gets 401 unauthorized in the JSON error shape. The presented
key's hash is compared with every stored hash in constant time (hmac.compare_digest, no early
exit). Health, readiness, metrics, /info, the API document and the pages stay open. The page's
form sends the key its field holds: as the Authorization header from its script, or as the form
field `api_key` without JavaScript (a browser form cannot set headers).
"""

import hashlib
import hmac
import re
import secrets
import sys
from pathlib import Path

from flask import Flask, request

from facade.context import API_KEYS_KEY
from facade.errors import UnauthorizedError
from facade.settings import SettingsError

HASH_LINE = re.compile(r"sha256:([0-9a-f]{64})")
BEARER = re.compile(r"Bearer\s+(\S+)", re.IGNORECASE)
FORM_FIELD = "api_key"
FORM = "application/x-www-form-urlencoded"
# (method, route) pairs that need a key when keys are on.
PROTECTED = frozenset({("POST", "/"), ("POST", "/predict")})


class ApiKeysError(SettingsError):
    """The key file cannot be used; the message says what to change."""


def key_hash(key: str) -> str:
    """Return the line that stores `key`: sha256:<hex>."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_key_hashes(path: str) -> tuple[bytes, ...]:
    """Return the SHA-256 digests stored in a key file, or raise ApiKeysError naming the bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ApiKeysError(f"FACADE_API_KEYS_FILE={path!r} cannot be read: {exc.strerror}") from None
    digests = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = HASH_LINE.fullmatch(line)
        if match is None:
            raise ApiKeysError(
                f"FACADE_API_KEYS_FILE line {number} is not sha256:<64 hex digits> (keys are stored hashed; "
                "`python -m facade.auth` prints a key and its line)"
            )
        digests.append(bytes.fromhex(match.group(1)))
    if not digests:
        raise ApiKeysError(f"FACADE_API_KEYS_FILE={path!r} holds no key hash; unset it to turn keys off")
    return tuple(digests)


def is_known(key: str, digests: tuple[bytes, ...]) -> bool:
    """Return whether `key` hashes to one of `digests`, comparing with every one in constant time."""
    presented = hashlib.sha256(key.encode("utf-8")).digest()
    found = False
    for digest in digests:
        found |= hmac.compare_digest(presented, digest)
    return found


def install(app: Flask, keys_file: str) -> None:
    """Require a key on the protected routes when `keys_file` is set."""
    if not keys_file:
        return
    app.extensions[API_KEYS_KEY] = read_key_hashes(keys_file)
    app.before_request(_require_key)
    app.after_request(_challenge)


def _challenge(response):
    # RFC 6750: a 401 names the scheme the client should use.
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sentiment"'
    return response


def _require_key():
    from flask import current_app

    if request.url_rule is None or (request.method, request.url_rule.rule) not in PROTECTED:
        return None
    key = _presented_key()
    if key is not None and is_known(key, current_app.extensions[API_KEYS_KEY]):
        return None
    message = (
        "This service needs an API key: send Authorization: Bearer <key>."
        if key is None
        else "The API key is not one this service knows; check it, or ask for a new one."
    )
    if request.mimetype == FORM and request.path == "/":
        from facade.routes import page

        return page(text=request.form.get("text") or "", error=message, status=401)
    raise UnauthorizedError(message)


def _presented_key() -> str | None:
    match = BEARER.fullmatch(request.headers.get("Authorization", "").strip())
    if match:
        return match.group(1)
    if request.mimetype == FORM and request.path == "/":
        return request.form.get(FORM_FIELD) or None
    return None


def main() -> int:
    """Print a new random key and the line that stores it in FACADE_API_KEYS_FILE."""
    key = secrets.token_urlsafe(32)
    print(f"key:  {key}\nline: {key_hash(key)}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
