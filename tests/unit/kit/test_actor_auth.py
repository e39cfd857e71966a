import base64
import datetime as dt
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.kit.auth import ADMIN_PERMISSION, Actor, ActorVerifier, generate_actor_key, mint_actor_token
from services.kit.errors import PermissionDenied, Unauthenticated

ISS, AUD = "https://idp.test/", "trellis"


@pytest.fixture(scope="module")
def keys():
    return generate_actor_key()


@pytest.fixture
def verifier(keys):
    return ActorVerifier(issuer=ISS, audience=AUD, public_key_pem=keys[1])


def token(keys, **kw):
    args = dict(issuer=ISS, audience=AUD, user_id="alice", org_id="org_1", permissions=[ADMIN_PERMISSION])
    args.update(kw)
    return mint_actor_token(keys[0], **args)


def test_a_valid_token_yields_the_actor(keys, verifier):
    actor = verifier.verify(token(keys))
    assert (actor.user_id, actor.org_id) == ("alice", "org_1")
    assert ADMIN_PERMISSION in actor.permissions
    actor.require(ADMIN_PERMISSION)


def test_a_missing_permission_is_permission_denied():
    with pytest.raises(PermissionDenied, match=ADMIN_PERMISSION):
        Actor("bob", "org_1", frozenset()).require(ADMIN_PERMISSION)


def test_a_token_signed_by_another_key_is_refused(verifier):
    other = generate_actor_key()
    with pytest.raises(Unauthenticated):
        verifier.verify(token(other))


@pytest.mark.parametrize("field,value", [("issuer", "https://evil.test/"), ("audience", "other")])
def test_wrong_issuer_or_audience_is_refused(keys, verifier, field, value):
    with pytest.raises(Unauthenticated):
        verifier.verify(token(keys, **{field: value}))


def test_an_expired_token_is_refused(keys, verifier):
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token(keys, ttl_seconds=-120))


def test_alg_none_is_refused(verifier):
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"iss": ISS, "aud": AUD, "sub": "mallory", "org": "org_1", "permissions": [ADMIN_PERMISSION], "iat": now, "exp": now + 60}
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(Unauthenticated):
        verifier.verify(unsigned)


def test_hs256_signed_with_the_public_key_is_refused(keys, verifier):
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps({"iss": ISS, "aud": AUD, "sub": "m", "org": "o", "iat": now, "exp": now + 60}).encode()).rstrip(b"=")
    import hashlib
    import hmac

    sig = base64.urlsafe_b64encode(hmac.new(keys[1], header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    with pytest.raises(Unauthenticated):
        verifier.verify((header + b"." + payload + b"." + sig).decode())


def test_a_token_without_an_organisation_is_refused(keys, verifier):
    with pytest.raises(Unauthenticated, match="organisation"):
        verifier.verify(token(keys, org_id=""))


def test_rsa_actor_keys_are_pinned_to_rs256():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.hazmat.primitives import serialization

    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verifier = ActorVerifier(issuer=ISS, audience=AUD, public_key_pem=pub)
    assert verifier.verify(mint_actor_token(pem, issuer=ISS, audience=AUD, user_id="u", org_id="o", permissions=[])).user_id == "u"


@pytest.mark.parametrize("changes", [
    {"exp": "9999999999"},       # PyJWT alone takes anything int() takes
    {"exp": 9_999_999_999.5},
    {"iat": "1700000000"},
    {"nbf": True},
])
def test_times_that_are_not_integers_are_refused(keys, verifier, changes):
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"iss": ISS, "aud": AUD, "sub": "alice", "org": "org_1", "permissions": [ADMIN_PERMISSION],
              "iat": now, "exp": now + 300, **changes}
    key = serialization.load_pem_private_key(keys[0], password=None)
    forged = jwt.encode(claims, key, algorithm="ES256")
    with pytest.raises(Unauthenticated, match="must be an integer"):
        verifier.verify(forged)


class CountingVerifier(ActorVerifier):
    """Counts the full checks (signature, claims) it makes."""

    checks = 0

    def _check(self, token):
        self.checks += 1
        return super()._check(token)


class Clock:
    def __init__(self):
        self.now = dt.datetime.now(dt.timezone.utc).timestamp()

    def __call__(self):
        return self.now


def counting(keys, clock, **kw):
    return CountingVerifier(issuer=ISS, audience=AUD, public_key_pem=keys[1], clock=clock, **kw)


def test_a_verified_token_is_remembered_and_checked_again_after_the_cache_time(keys):
    clock = Clock()
    verifier = counting(keys, clock, cache_seconds=60)
    good = token(keys, ttl_seconds=900)
    first = verifier.verify(good)
    assert verifier.verify(good) == first and verifier.checks == 1
    clock.now += 61
    assert verifier.verify(good) == first and verifier.checks == 2


def test_a_remembered_token_is_not_handed_out_at_or_after_its_exp(keys):
    clock = Clock()
    verifier = counting(keys, clock, cache_seconds=3600)
    good = token(keys, ttl_seconds=120)
    verifier.verify(good)
    exp = jwt.decode(good, options={"verify_signature": False})["exp"]
    clock.now = exp  # the fresh check that follows still allows its 30 s leeway, as before
    verifier.verify(good)
    assert verifier.checks == 2


def test_refusals_are_never_remembered(keys):
    verifier = counting(keys, Clock())
    bad = token(generate_actor_key())
    for expected in (1, 2):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)
        assert verifier.checks == expected


def test_a_token_with_another_signature_is_not_the_remembered_one(keys):
    verifier = counting(keys, Clock())
    good = token(keys)
    verifier.verify(good)
    head, body, signature = good.split(".")
    forged = f"{head}.{body}.{signature[:-4]}AAAA"
    with pytest.raises(Unauthenticated):
        verifier.verify(forged)
    assert verifier.checks == 2


def test_the_cache_is_bounded_and_drops_the_least_recently_used(keys):
    verifier = counting(keys, Clock(), cache_size=2)
    a, b, c = (token(keys, user_id=u) for u in ("a", "b", "c"))
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now the most recently used
    verifier.verify(c)  # b goes
    assert verifier.checks == 3
    verifier.verify(a)
    assert verifier.checks == 3
    verifier.verify(b)
    assert verifier.checks == 4
