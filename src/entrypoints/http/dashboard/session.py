"""The dashboard's login session: a signed cookie, nothing stored on the server (ADR 22).

The cookie holds the user, an expiry and a CSRF token, base64url-encoded and signed
with HMAC-SHA256. Its key is derived from ``SECRET_KEY`` *and* the configured user and
password, for the dashboard only: a session is never an API token (nor the reverse),
and changing the password ends every session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE_NAME = "pfcon_dashboard"
COOKIE_PATH = "/dashboard"
_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    expires: int  # epoch seconds
    csrf: str  # the token every state-changing form must carry


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and verifies dashboard session cookies."""

    def __init__(
        self,
        secret_key: str,
        user: str,
        password: str,
        lifetime_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        material = "\x00".join(("pfcon dashboard session", _VERSION, user, password)).encode("utf-8", "surrogatepass")
        self._key = hmac.new(secret_key.encode("utf-8", "surrogatepass"), material, hashlib.sha256).digest()
        self.lifetime = lifetime_seconds
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{_VERSION}.{payload}".encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: str) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session = Session(user=user, expires=int(self._clock()) + self.lifetime, csrf=secrets.token_urlsafe(32))
        body = json.dumps({"u": session.user, "e": session.expires, "c": session.csrf}, separators=(",", ":"))
        payload = _b64(body.encode("utf-8", "surrogatepass"))
        return session, f"{_VERSION}.{payload}.{self._sign(payload)}"

    def verify(self, value: str | None) -> Session | None:
        """The session a cookie value carries, or None if it is absent, forged or expired."""
        if not value or not value.isascii() or len(value) > 4096:
            return None
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            return None
        _, payload, signature = parts
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claims = json.loads(_unb64(payload))
            session = Session(user=str(claims["u"]), expires=int(claims["e"]), csrf=str(claims["c"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if self._clock() >= session.expires:
            return None
        return session

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode("utf-8", "replace"))
