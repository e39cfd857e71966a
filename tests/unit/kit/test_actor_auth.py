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
