"""pfcon's single-user login with HS256 JSON Web Tokens (RFC 7519), stdlib only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from ...domain.errors import ExpiredToken, InvalidCredentials, InvalidToken

TOKEN_LIFETIME_SECONDS = 2 * 24 * 3600  # pfcon: 48 hours
_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(c not in _B64_CHARS for c in text):
        raise InvalidToken("invalid base64url segment")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise InvalidToken("invalid base64url segment") from None


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def encode_hs256(claims: dict[str, Any], key: bytes) -> str:
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64encode(signature)}"


def decode_hs256(token: str, key: bytes, now: float) -> dict[str, Any]:
    """Verify signature, algorithm and a mandatory ``exp``; return the claims."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("token must have three segments")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(payload_b64))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("token segments are not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("only HS256 tokens are accepted")
    expected = hmac.new(key, f"{header_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64decode(signature_b64)):
        raise InvalidToken("signature mismatch")
    if not isinstance(claims, dict):
        raise InvalidToken("claims must be an object")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise InvalidToken("token has no valid 'exp' claim")
    if now >= exp:
        raise ExpiredToken("token expired")
    return claims


class JwtAuth:
    """Implements the auth port for pfcon's single configured user."""

    def __init__(
        self,
        secret_key: str,
        user: str,
        password: str,
        clock: Callable[[], float] = time.time,
        lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
    ) -> None:
        self._key = secret_key.encode("utf-8")
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")
        self._user_name = user
        self._clock = clock
        self._lifetime = lifetime_seconds

    def issue_token(self, user: str, password: str) -> str:
        # Compare both in constant time, and always both, so timing tells nothing.
        user_ok = hmac.compare_digest(user.encode("utf-8"), self._user)
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password)
        if not (user_ok and password_ok):
            raise InvalidCredentials("Unable to log in with provided credentials.")
        exp = int(self._clock()) + self._lifetime  # epoch seconds are UTC by definition
        return encode_hs256({"pfcon_user": self._user_name, "exp": exp}, self._key)

    def verify_token(self, token: str) -> None:
        claims = decode_hs256(token, self._key, self._clock())
        user = claims.get("pfcon_user")
        if not isinstance(user, str) or not hmac.compare_digest(user.encode("utf-8"), self._user):
            raise InvalidToken("token was not issued to the configured user")
