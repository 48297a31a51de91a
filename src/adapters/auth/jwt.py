"""pfcon's single-user login with HS256 JSON Web Tokens, issued and verified by PyJWT.

pfcon issues ``jwt.encode({"pfcon_user": user, "exp": utcnow() + 48 h}, SECRET_KEY,
algorithm="HS256")`` and verifies with ``jwt.decode(token, SECRET_KEY, algorithms=["HS256"])``;
tokens made here and by pfcon for the same key and user are interchangeable.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable

import jwt

from ...domain.errors import ExpiredToken, InvalidCredentials, InvalidToken

TOKEN_LIFETIME_SECONDS = 2 * 24 * 3600  # pfcon: 48 hours
# Tokens already verified, with their expiry: CUBE presents the same token on every
# request, and a dict lookup costs ~0.1 us where PyJWT's decode costs ~60 us. Bounded.
VERIFIED_CACHE_SIZE = 256
ALGORITHM = "HS256"
USER_CLAIM = "pfcon_user"


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (from JSON "\ud800" or a surrogateescaped
    # environment) compares as bytes instead of raising UnicodeEncodeError.
    return text.encode("utf-8", "surrogatepass")


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
        self._key = _utf8(secret_key)
        self._user = _utf8(user)
        self._password = _utf8(password)
        self._user_name = user
        self._clock = clock
        self._lifetime = lifetime_seconds
        self._verified: dict[str, int | float] = {}  # token -> exp; only tokens that passed every check

    def issue_token(self, user: str, password: str) -> str:
        # Compare both in constant time, and always both, so timing tells nothing.
        user_ok = hmac.compare_digest(_utf8(user), self._user)
        password_ok = hmac.compare_digest(_utf8(password), self._password)
        if not (user_ok and password_ok):
            raise InvalidCredentials("Unable to log in with provided credentials.")
        exp = int(self._clock()) + self._lifetime  # epoch seconds are UTC by definition
        return jwt.encode({USER_CLAIM: self._user_name, "exp": exp}, self._key, algorithm=ALGORITHM)

    def verify_token(self, token: str) -> None:
        exp = self._verified.get(token)
        if exp is not None:
            if self._clock() >= exp:
                self._verified.pop(token, None)
                raise ExpiredToken("token expired")
            return
        self._verified_exp(token)

    def _verified_exp(self, token: str) -> None:
        # PyJWT checks the signature, the algorithm (HS256 only, never "none") and that
        # ``exp`` is present; the expiry itself is checked here against the injectable
        # clock, since PyJWT would compare it with the real time.
        if not token.isascii():  # compact JWS is base64url and dots; PyJWT would fail to encode it
            raise InvalidToken("token is not ASCII")
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], options={"require": ["exp"], "verify_exp": False}
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        exp = claims["exp"]
        # bool is an int; NaN and Infinity are accepted by Python's JSON parser and
        # would never compare as expired.
        if (
            isinstance(exp, bool)
            or not isinstance(exp, (int, float))
            or (isinstance(exp, float) and not math.isfinite(exp))
        ):
            raise InvalidToken("token has no valid 'exp' claim")
        if self._clock() >= exp:
            raise ExpiredToken("token expired")
        user = claims.get(USER_CLAIM)
        if not isinstance(user, str) or not hmac.compare_digest(_utf8(user), self._user):
            raise InvalidToken("token was not issued to the configured user")
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # a burst of distinct tokens: start over (never unbounded)
        self._verified[token] = exp
