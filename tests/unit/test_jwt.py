"""HS256 tokens of pfcon's single-user login (contract §2, §12.4 hardening)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from pfcon.adapters.auth.jwt import TOKEN_LIFETIME_SECONDS, JwtAuth, encode_hs256
from pfcon.domain.errors import ExpiredToken, InvalidCredentials, InvalidToken

SECRET = "a-test-signing-key-that-is-at-least-32-bytes-long"
USER, PASSWORD = "pfcon", "pfcon1234"
T0 = 1_700_000_000.75
FORTY_EIGHT_HOURS = 48 * 3600


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def sign(header_b64: str, payload_b64: str, key: str = SECRET) -> str:
    mac = hmac.new(key.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256)
    return f"{header_b64}.{payload_b64}.{b64url(mac.digest())}"


def handmade(claims: Any, header: Any = None, key: str = SECRET) -> str:
    """A correctly signed token with arbitrary header and claims."""
    return sign(segment(header or {"alg": "HS256", "typ": "JWT"}), segment(claims), key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock: FakeClock) -> JwtAuth:
    return JwtAuth(SECRET, USER, PASSWORD, clock=clock)


def test_lifetime_constant_is_48_hours() -> None:
    assert TOKEN_LIFETIME_SECONDS == FORTY_EIGHT_HOURS


def test_token_for_right_credentials_verifies(auth: JwtAuth) -> None:
    token = auth.issue_token(USER, PASSWORD)
    assert isinstance(token, str)
    assert token.count(".") == 2
    auth.verify_token(token)  # no exception


def test_token_header_and_claims(auth: JwtAuth) -> None:
    header_b64, payload_b64, signature_b64 = auth.issue_token(USER, PASSWORD).split(".")
    assert json.loads(unb64url(header_b64)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(unb64url(payload_b64))
    assert claims == {"pfcon_user": USER, "exp": int(T0) + FORTY_EIGHT_HOURS}
    assert isinstance(claims["exp"], int)
    # base64url without padding, and the signature is HMAC-SHA256 over header.payload
    assert "=" not in header_b64 + payload_b64 + signature_b64
    expected = hmac.new(SECRET.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256)
    assert unb64url(signature_b64) == expected.digest()


def test_exp_follows_the_clock(clock: FakeClock, auth: JwtAuth) -> None:
    clock.now = 2_000_000_000
    claims = json.loads(unb64url(auth.issue_token(USER, PASSWORD).split(".")[1]))
    assert claims["exp"] == 2_000_000_000 + FORTY_EIGHT_HOURS


def test_unicode_credentials() -> None:
    auth = JwtAuth(SECRET, "jürgen", "pässwört", clock=FakeClock())
    token = auth.issue_token("jürgen", "pässwört")
    assert json.loads(unb64url(token.split(".")[1]))["pfcon_user"] == "jürgen"
    auth.verify_token(token)
    with pytest.raises(InvalidCredentials):
        auth.issue_token("jurgen", "pässwört")


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (USER, "wrong"),
        ("wrong", PASSWORD),
        ("wrong", "wrong"),
        ("", ""),
        (USER, ""),
        (USER, PASSWORD + " "),
        (USER.upper(), PASSWORD),
        (PASSWORD, USER),
    ],
)
def test_wrong_credentials(auth: JwtAuth, user: str, password: str) -> None:
    with pytest.raises(InvalidCredentials):
        auth.issue_token(user, password)


def test_tampered_payload_is_invalid(auth: JwtAuth) -> None:
    header_b64, _, signature_b64 = auth.issue_token(USER, PASSWORD).split(".")
    forged = segment({"pfcon_user": "admin", "exp": int(T0) + FORTY_EIGHT_HOURS})
    with pytest.raises(InvalidToken):
        auth.verify_token(f"{header_b64}.{forged}.{signature_b64}")


def test_extended_exp_without_resigning_is_invalid(auth: JwtAuth) -> None:
    header_b64, _, signature_b64 = auth.issue_token(USER, PASSWORD).split(".")
    forged = segment({"pfcon_user": USER, "exp": int(T0) + 10 * FORTY_EIGHT_HOURS})
    with pytest.raises(InvalidToken):
        auth.verify_token(f"{header_b64}.{forged}.{signature_b64}")


def test_tampered_signature_is_invalid(auth: JwtAuth) -> None:
    header_b64, payload_b64, signature_b64 = auth.issue_token(USER, PASSWORD).split(".")
    sig = bytearray(unb64url(signature_b64))
    sig[0] ^= 0x01
    with pytest.raises(InvalidToken):
        auth.verify_token(f"{header_b64}.{payload_b64}.{b64url(bytes(sig))}")
    with pytest.raises(InvalidToken):  # truncated signature
        auth.verify_token(f"{header_b64}.{payload_b64}.{signature_b64[:-4]}")


def test_token_signed_with_another_key_is_invalid(clock: FakeClock, auth: JwtAuth) -> None:
    other = JwtAuth("another-signing-key-of-sufficient-length!!", USER, PASSWORD, clock=clock)
    with pytest.raises(InvalidToken):
        auth.verify_token(other.issue_token(USER, PASSWORD))


def test_alg_none_is_invalid(auth: JwtAuth) -> None:
    claims = {"pfcon_user": USER, "exp": int(T0) + 3600}
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}."
    with pytest.raises(InvalidToken):
        auth.verify_token(unsigned)
    # even with a valid HMAC over the none-header
    with pytest.raises(InvalidToken):
        auth.verify_token(handmade(claims, header={"alg": "none", "typ": "JWT"}))


@pytest.mark.parametrize("alg", ["HS512", "hs256", "RS256", None])
def test_other_algorithms_are_invalid(auth: JwtAuth, alg: str | None) -> None:
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    with pytest.raises(InvalidToken):
        auth.verify_token(handmade({"pfcon_user": USER, "exp": int(T0) + 3600}, header=header))


@pytest.mark.parametrize(
    "token",
    [
        "initial_token",
        "a.b.c",
        "",
        ".",
        "..",
        "a..c",
        ".b.c",
        "a.b.",
        "a.b.c.d",
        "!!!.###.$$$",
        "eyJ.eyJ.sig",
        "Bearer abc.def.ghi",
        "é.é.é",
        f"{segment({'alg': 'HS256'})}=.{segment({'exp': 1})}.AAAA",  # padding chars
    ],
)
def test_garbage_tokens_are_invalid(auth: JwtAuth, token: str) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(token)


def test_token_with_extra_segment_is_invalid(auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(auth.issue_token(USER, PASSWORD) + ".extra")


def test_non_json_segments_are_invalid(auth: JwtAuth) -> None:
    header_b64 = segment({"alg": "HS256", "typ": "JWT"})
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(header_b64, b64url(b"not json")))
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(b64url(b"\xff\xfe{"), segment({"exp": int(T0) + 10})))


@pytest.mark.parametrize(
    "claims",
    [
        {"pfcon_user": USER},  # no exp
        {"pfcon_user": USER, "exp": str(int(T0) + 3600)},  # exp as a string
        {"pfcon_user": USER, "exp": None},
        {"pfcon_user": USER, "exp": True},
        {"pfcon_user": USER, "exp": [int(T0) + 3600]},
        [USER, int(T0) + 3600],  # claims not an object
        "claims",
    ],
)
def test_tokens_without_a_valid_exp_are_invalid(auth: JwtAuth, claims: Any) -> None:
    token = handmade(claims)
    with pytest.raises(InvalidToken) as info:
        auth.verify_token(token)
    assert not isinstance(info.value, ExpiredToken)


def test_header_must_be_an_object(auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(segment(["HS256"]), segment({"exp": int(T0) + 10})))


def test_expiry_follows_the_clock(clock: FakeClock, auth: JwtAuth) -> None:
    token = auth.issue_token(USER, PASSWORD)
    exp = int(T0) + FORTY_EIGHT_HOURS
    clock.now = exp - 1
    auth.verify_token(token)
    clock.now = exp
    with pytest.raises(ExpiredToken):
        auth.verify_token(token)
    clock.now = exp + 365 * 24 * 3600
    with pytest.raises(ExpiredToken):
        auth.verify_token(token)


def test_expired_is_still_checked_after_the_signature(clock: FakeClock, auth: JwtAuth) -> None:
    # an expired token with a bad signature is invalid, not merely expired
    token = handmade({"pfcon_user": USER, "exp": int(T0) - 10}, key="wrong-key-wrong-key-wrong-key-!")
    with pytest.raises(InvalidToken) as info:
        auth.verify_token(token)
    assert not isinstance(info.value, ExpiredToken)


def test_handmade_valid_token_with_float_exp(auth: JwtAuth) -> None:
    auth.verify_token(handmade({"pfcon_user": USER, "exp": T0 + 0.5}))
    with pytest.raises(ExpiredToken):
        auth.verify_token(handmade({"pfcon_user": USER, "exp": T0 - 0.5}))


def test_encode_hs256_round_trip(auth: JwtAuth) -> None:
    token = encode_hs256({"pfcon_user": USER, "exp": int(T0) + 60}, SECRET.encode())
    auth.verify_token(token)
    assert json.loads(unb64url(token.split(".")[1])) == {"pfcon_user": USER, "exp": int(T0) + 60}


def test_token_for_another_user_is_invalid(auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(handmade({"pfcon_user": "mallory", "exp": int(T0) + 3600}))


# -- interoperability with PyJWT ------------------------------------------------


def test_pyjwt_decodes_our_tokens() -> None:
    jwt = pytest.importorskip("jwt")
    now = time.time()
    auth = JwtAuth(SECRET, USER, PASSWORD, clock=lambda: now)
    token = auth.issue_token(USER, PASSWORD)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims == {"pfcon_user": USER, "exp": int(now) + FORTY_EIGHT_HOURS}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "some-other-key-of-sufficient-length-xx", algorithms=["HS256"])


def test_we_verify_pyjwt_tokens() -> None:
    jwt = pytest.importorskip("jwt")
    now = time.time()
    clock = FakeClock(now)
    auth = JwtAuth(SECRET, USER, PASSWORD, clock=clock)
    exp = int(now) + FORTY_EIGHT_HOURS
    token = jwt.encode({"pfcon_user": USER, "exp": exp}, SECRET, algorithm="HS256")
    if isinstance(token, bytes):  # PyJWT 1.x
        token = token.decode()
    auth.verify_token(token)
    clock.now = exp
    with pytest.raises(ExpiredToken):
        auth.verify_token(token)
    clock.now = now
    wrong = jwt.encode(
        {"pfcon_user": USER, "exp": exp}, "some-other-key-of-sufficient-length-xx", algorithm="HS256"
    )
    with pytest.raises(InvalidToken):
        auth.verify_token(wrong if isinstance(wrong, str) else wrong.decode())
    no_exp = jwt.encode({"pfcon_user": USER}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        auth.verify_token(no_exp if isinstance(no_exp, str) else no_exp.decode())
