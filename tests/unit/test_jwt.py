"""HS256 tokens of pfcon's single-user login, issued and verified by PyJWT (docs/wire-contract.md §2)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from pfcon.adapters.auth.jwt import TOKEN_LIFETIME_SECONDS, JwtAuth
from pfcon.domain.errors import ExpiredToken, InvalidCredentials, InvalidToken

SECRET = "a-test-signing-key-that-is-at-least-32-bytes-long"
OTHER_SECRET = "another-signing-key-of-sufficient-length!!"
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


def sign(header_b64: str, payload_b64: str, key: str = SECRET, digest: Any = hashlib.sha256) -> str:
    mac = hmac.new(key.encode(), f"{header_b64}.{payload_b64}".encode(), digest)
    return f"{header_b64}.{payload_b64}.{b64url(mac.digest())}"


def handmade(claims: Any, header: Any = None, key: str = SECRET) -> str:
    """A correctly HMAC-SHA256-signed token with arbitrary header and claims (PyJWT refuses to make some)."""
    return sign(segment(header or {"alg": "HS256", "typ": "JWT"}), segment(claims), key)


def pfcon_token(key: str = SECRET, user: str = USER) -> str:
    """Exactly how pfcon (pfcon/resources.py, Auth.post) issues a token."""
    return jwt.encode(
        {"pfcon_user": user, "exp": datetime.datetime.utcnow() + datetime.timedelta(hours=48)},
        key,
        algorithm="HS256",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock: FakeClock) -> JwtAuth:
    return JwtAuth(SECRET, USER, PASSWORD, clock=clock)


@pytest.fixture
def real_auth() -> JwtAuth:
    return JwtAuth(SECRET, USER, PASSWORD)  # the real clock, as in production


def test_lifetime_constant_is_48_hours() -> None:
    assert TOKEN_LIFETIME_SECONDS == FORTY_EIGHT_HOURS


def test_hand_written_jwt_code_is_gone() -> None:
    import pfcon.adapters.auth.jwt as module

    assert not hasattr(module, "encode_hs256")
    assert not hasattr(module, "decode_hs256")


# -- issuing --------------------------------------------------------------------


def test_token_for_right_credentials_verifies(auth: JwtAuth) -> None:
    token = auth.issue_token(USER, PASSWORD)
    assert isinstance(token, str)
    assert token.count(".") == 2
    auth.verify_token(token)  # no exception


def test_our_token_decodes_with_pyjwt_as_pfcon_does(real_auth: JwtAuth) -> None:
    before = int(time.time())
    token = real_auth.issue_token(USER, PASSWORD)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])  # pfcon's PfconAuth.authenticate
    assert set(claims) == {"pfcon_user", "exp"}
    assert claims["pfcon_user"] == USER
    assert type(claims["exp"]) is int
    assert before + FORTY_EIGHT_HOURS <= claims["exp"] <= int(time.time()) + FORTY_EIGHT_HOURS
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, OTHER_SECRET, algorithms=["HS256"])


def test_token_wire_format(auth: JwtAuth) -> None:
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
    clock.now = 2_000_000_000.9
    claims = jwt.decode(auth.issue_token(USER, PASSWORD), SECRET, algorithms=["HS256"])
    assert claims["exp"] == 2_000_000_000 + FORTY_EIGHT_HOURS


def test_custom_lifetime(clock: FakeClock) -> None:
    auth = JwtAuth(SECRET, USER, PASSWORD, clock=clock, lifetime_seconds=60)
    token = auth.issue_token(USER, PASSWORD)
    clock.now = int(T0) + 59
    auth.verify_token(token)
    clock.now = int(T0) + 60
    with pytest.raises(ExpiredToken):
        auth.verify_token(token)


def test_unicode_credentials() -> None:
    auth = JwtAuth(SECRET, "jürgen", "pässwört", clock=FakeClock())
    token = auth.issue_token("jürgen", "pässwört")
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})["pfcon_user"] == "jürgen"
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
        (USER, "\ud800"),  # a lone surrogate from JSON must not crash the comparison
    ],
)
def test_wrong_credentials(auth: JwtAuth, user: str, password: str) -> None:
    with pytest.raises(InvalidCredentials) as info:
        auth.issue_token(user, password)
    assert info.value.message == "Unable to log in with provided credentials."


def test_both_credentials_are_always_compared(monkeypatch: pytest.MonkeyPatch, auth: JwtAuth) -> None:
    import pfcon.adapters.auth.jwt as module

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(module.hmac, "compare_digest", spy)
    with pytest.raises(InvalidCredentials):
        auth.issue_token("wrong", PASSWORD)
    assert calls == [(b"wrong", USER.encode()), (PASSWORD.encode(), PASSWORD.encode())]


# -- interoperability with real pfcon -------------------------------------------


def test_token_issued_the_way_pfcon_does_is_accepted(real_auth: JwtAuth) -> None:
    real_auth.verify_token(pfcon_token())


def test_pfcon_token_expires_after_48_hours_on_our_clock() -> None:
    token = pfcon_token()
    exp = jwt.decode(token, SECRET, algorithms=["HS256"])["exp"]
    clock = FakeClock(exp - 1)
    auth = JwtAuth(SECRET, USER, PASSWORD, clock=clock)
    auth.verify_token(token)
    clock.now = exp
    with pytest.raises(ExpiredToken):
        auth.verify_token(token)


def test_pfcon_token_for_another_key_or_user_is_refused(real_auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        real_auth.verify_token(pfcon_token(key=OTHER_SECRET))
    with pytest.raises(InvalidToken):
        real_auth.verify_token(pfcon_token(user="chris"))


@pytest.mark.filterwarnings("ignore::UserWarning")  # PyJWT >= 2.10 warns about HMAC keys under 32 bytes
def test_short_keys_still_interoperate() -> None:
    # pfcon does not enforce a key length, so neither may we.
    auth = JwtAuth("short", USER, PASSWORD)
    auth.verify_token(pfcon_token(key="short"))
    jwt.decode(auth.issue_token(USER, PASSWORD), "short", algorithms=["HS256"])


# -- refused tokens -------------------------------------------------------------


def test_token_signed_with_another_key_is_invalid(clock: FakeClock, auth: JwtAuth) -> None:
    other = JwtAuth(OTHER_SECRET, USER, PASSWORD, clock=clock)
    with pytest.raises(InvalidToken):
        auth.verify_token(other.issue_token(USER, PASSWORD))
    with pytest.raises(InvalidToken):
        auth.verify_token(jwt.encode({"pfcon_user": USER, "exp": int(T0) + 60}, OTHER_SECRET, algorithm="HS256"))


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
    with pytest.raises(InvalidToken):  # no signature at all
        auth.verify_token(f"{header_b64}.{payload_b64}.")


def test_alg_none_is_invalid(auth: JwtAuth) -> None:
    claims = {"pfcon_user": USER, "exp": int(T0) + 3600}
    with pytest.raises(InvalidToken):  # as PyJWT makes it
        auth.verify_token(jwt.encode(claims, None, algorithm="none"))
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}."
    with pytest.raises(InvalidToken):
        auth.verify_token(unsigned)
    with pytest.raises(InvalidToken):  # even with a valid HMAC over the none-header
        auth.verify_token(handmade(claims, header={"alg": "none", "typ": "JWT"}))


@pytest.mark.filterwarnings("ignore::UserWarning")  # PyJWT >= 2.10: HS512 wants a 64-byte key
def test_hs512_token_with_the_right_key_is_invalid(auth: JwtAuth) -> None:
    claims = {"pfcon_user": USER, "exp": int(T0) + 3600}
    with pytest.raises(InvalidToken):
        auth.verify_token(jwt.encode(claims, SECRET, algorithm="HS512"))
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(segment({"alg": "HS512", "typ": "JWT"}), segment(claims), digest=hashlib.sha512))


@pytest.mark.parametrize("alg", ["HS512", "HS384", "hs256", "RS256", "ES256", "", None])
def test_other_algorithm_headers_are_invalid(auth: JwtAuth, alg: str | None) -> None:
    # correctly HMAC-SHA256-signed, so only the header's algorithm is wrong
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    with pytest.raises(InvalidToken):
        auth.verify_token(handmade({"pfcon_user": USER, "exp": int(T0) + 3600}, header=header))


def test_rs256_confusion_with_the_secret_as_public_key_is_invalid(auth: JwtAuth) -> None:
    # The classic key-confusion forgery: an RS256 header, HMAC-signed with the shared secret.
    claims = segment({"pfcon_user": USER, "exp": int(T0) + 3600})
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(segment({"alg": "RS256", "typ": "JWT"}), claims))


@pytest.mark.parametrize(
    "token",
    [
        "initial_token",
        "a.b",  # two segments
        "abc.def",
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
        "\ud800.\ud800.\ud800",
        f"{segment({'alg': 'HS256'})}=.{segment({'exp': 1})}.AAAA",  # padding chars
    ],
)
def test_garbage_tokens_are_invalid(auth: JwtAuth, token: str) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(token)


def test_two_segments_of_a_valid_token_are_invalid(auth: JwtAuth) -> None:
    header_b64, payload_b64, _ = auth.issue_token(USER, PASSWORD).split(".")
    with pytest.raises(InvalidToken):
        auth.verify_token(f"{header_b64}.{payload_b64}")


def test_token_with_extra_segment_is_invalid(auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(auth.issue_token(USER, PASSWORD) + ".extra")


def test_non_json_segments_are_invalid(auth: JwtAuth) -> None:
    header_b64 = segment({"alg": "HS256", "typ": "JWT"})
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(header_b64, b64url(b"not json")))
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(b64url(b"\xff\xfe{"), segment({"exp": int(T0) + 10})))


def test_header_must_be_an_object(auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(sign(segment(["HS256"]), segment({"exp": int(T0) + 10})))


def test_missing_exp_is_invalid_also_from_pyjwt(auth: JwtAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(jwt.encode({"pfcon_user": USER}, SECRET, algorithm="HS256"))


def _nonfinite(literal: str) -> str:
    """A signed token whose exp is a non-standard JSON literal that Python's parser accepts."""
    payload = b64url(('{"pfcon_user":"pfcon","exp":' + literal + "}").encode())
    return sign(segment({"alg": "HS256", "typ": "JWT"}), payload)


@pytest.mark.parametrize(
    "claims",
    [
        {"pfcon_user": USER},  # no exp
        {"pfcon_user": USER, "exp": str(int(T0) + 3600)},  # exp as a string
        {"pfcon_user": USER, "exp": "soon"},
        {"pfcon_user": USER, "exp": None},
        {"pfcon_user": USER, "exp": True},  # bool is an int in Python
        {"pfcon_user": USER, "exp": False},
        {"pfcon_user": USER, "exp": [int(T0) + 3600]},
        {"pfcon_user": USER, "exp": {"at": int(T0) + 3600}},
        [USER, int(T0) + 3600],  # claims not an object
        "claims",
    ],
)
def test_tokens_without_a_valid_exp_are_invalid(auth: JwtAuth, claims: Any) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(handmade(claims))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_exp_is_invalid(auth: JwtAuth, literal: str) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(_nonfinite(literal))


def test_huge_integer_exp_is_accepted_not_a_crash(auth: JwtAuth) -> None:
    auth.verify_token(handmade({"pfcon_user": USER, "exp": 10**400}))


def test_expiry_follows_the_injected_clock(clock: FakeClock, auth: JwtAuth) -> None:
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


def test_injected_clock_overrides_real_time_both_ways() -> None:
    # exp long past in real time but in the future on the injected clock: accepted
    past = handmade({"pfcon_user": USER, "exp": 1_000_000_000})
    JwtAuth(SECRET, USER, PASSWORD, clock=lambda: 999_999_999.0).verify_token(past)
    # exp in the future in real time but past on the injected clock: expired
    future = pfcon_token()
    with pytest.raises(ExpiredToken):
        JwtAuth(SECRET, USER, PASSWORD, clock=lambda: time.time() + 49 * 3600).verify_token(future)


def test_expired_with_real_clock(real_auth: JwtAuth) -> None:
    with pytest.raises(ExpiredToken):
        real_auth.verify_token(jwt.encode({"pfcon_user": USER, "exp": int(time.time()) - 1}, SECRET, algorithm="HS256"))


def test_expired_with_a_bad_signature_is_invalid_not_expired(auth: JwtAuth) -> None:
    token = handmade({"pfcon_user": USER, "exp": int(T0) - 10}, key=OTHER_SECRET)
    with pytest.raises(InvalidToken):
        auth.verify_token(token)


def test_float_exp_is_honoured(auth: JwtAuth) -> None:
    auth.verify_token(handmade({"pfcon_user": USER, "exp": T0 + 0.5}))
    with pytest.raises(ExpiredToken):
        auth.verify_token(handmade({"pfcon_user": USER, "exp": T0 - 0.5}))


@pytest.mark.parametrize(
    "claims",
    [
        {"pfcon_user": "mallory", "exp": int(T0) + 3600},
        {"pfcon_user": USER.upper(), "exp": int(T0) + 3600},
        {"pfcon_user": USER + " ", "exp": int(T0) + 3600},
        {"pfcon_user": "", "exp": int(T0) + 3600},
        {"pfcon_user": "\ud800", "exp": int(T0) + 3600},
        {"pfcon_user": None, "exp": int(T0) + 3600},
        {"pfcon_user": [USER], "exp": int(T0) + 3600},
        {"user": USER, "exp": int(T0) + 3600},
        {"exp": int(T0) + 3600},
    ],
)
def test_token_for_another_or_no_user_is_invalid(auth: JwtAuth, claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        auth.verify_token(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_verified_token_is_remembered_until_it_expires(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, auth: JwtAuth
) -> None:
    import pfcon.adapters.auth.jwt as module

    token = auth.issue_token(USER, PASSWORD)
    decodes: list[str] = []
    real_decode = module.jwt.decode
    monkeypatch.setattr(module.jwt, "decode", lambda t, *a, **k: decodes.append(t) or real_decode(t, *a, **k))
    for _ in range(5):
        auth.verify_token(token)
    assert decodes == [token]  # CUBE's token on every request: decoded once
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):  # a refused token is never remembered
        with pytest.raises(InvalidToken):
            auth.verify_token(forged)
    assert decodes == [token, forged, forged]
    clock.now = int(T0) + FORTY_EIGHT_HOURS
    with pytest.raises(ExpiredToken):
        auth.verify_token(token)


def test_the_verified_tokens_are_bounded(clock: FakeClock, auth: JwtAuth) -> None:
    import pfcon.adapters.auth.jwt as module

    for i in range(module.VERIFIED_CACHE_SIZE * 3):
        clock.now = T0 + i
        auth.verify_token(auth.issue_token(USER, PASSWORD))
    assert len(auth._verified) <= module.VERIFIED_CACHE_SIZE
