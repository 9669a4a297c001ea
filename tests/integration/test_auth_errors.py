"""Credential errors (401 codes), malformed bodies (400), media types (415)
and the problem+json shape of every error (API.md "Errors")."""

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
import requests

from conftest import (JWT_KEY, assert_problem, b64url, make_jwt, register,
                      unique_email)


@pytest.fixture
def user(server):
    return register(server)


def me(server, token):
    return server.get("/auth/me", token=token)


def claims_for(user, **over):
    now = int(time.time())
    c = {"sub": user.id, "iat": now - 5, "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


# ------------------------------------------------------------ bearer tokens

def test_no_authorization_header(server):
    body = assert_problem(server.get("/auth/me"), 401, "unauthorized")
    assert body["title"]
    assert_problem(server.get("/auth/api-keys"), 401, "unauthorized")


def test_forged_token_with_the_right_key_works(server, user):
    """Confirms the forging recipe, so the refusals below mean something."""
    r = me(server, make_jwt(claims_for(user)))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user.id


def test_issued_token_is_hs256_with_the_secret_digest(server, user):
    """Access tokens are HS256 JWTs keyed with SHA-256(CORRAL_JWT_SECRET),
    with sub = the user id and exp - iat = access_token_ttl."""
    head, payload, sig = user.access.split(".")

    def decode(part):
        padded = part + "=" * (-len(part) % 4)
        return json.loads(base64.urlsafe_b64decode(padded))

    header, claims = decode(head), decode(payload)
    assert header["alg"] == "HS256"
    assert claims["sub"] == user.id
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 120
    mac = hmac.new(JWT_KEY, f"{head}.{payload}".encode(),
                   hashlib.sha256).digest()
    assert b64url(mac) == sig


def test_expired_token(server, user):
    now = int(time.time())
    tok = make_jwt(claims_for(user, iat=now - 3600, exp=now - 120))
    assert_problem(me(server, tok), 401, "token_expired")


def test_bad_signature(server, user):
    tok = make_jwt(claims_for(user))
    head, payload, sig = tok.split(".")
    flipped = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    assert_problem(me(server, f"{head}.{payload}.{flipped}"), 401,
                   "invalid_token")
    other_key = hashlib.sha256(b"some other secret of 32+ chars....").digest()
    assert_problem(me(server, make_jwt(claims_for(user), key=other_key)),
                   401, "invalid_token")
    # A real token whose payload was swapped for another user's id.
    victim = register(server)
    forged_payload = b64url(json.dumps(claims_for(victim)).encode())
    real_head, _, real_sig = user.access.split(".")
    assert_problem(me(server, f"{real_head}.{forged_payload}.{real_sig}"),
                   401, "invalid_token")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "....",
                                   "eyJhbGciOiJIUzI1NiJ9", "%%%.%%%.%%%"])
def test_garbage_tokens(server, token):
    assert_problem(me(server, token), 401, "invalid_token")


def test_alg_none(server, user):
    tok = make_jwt(claims_for(user), alg="none")
    assert_problem(me(server, tok), 401, "invalid_token")
    # "none" in the header but a valid HS256 MAC: still refused.
    tok = make_jwt(claims_for(user), header={"alg": "none", "typ": "JWT"})
    assert_problem(me(server, tok), 401, "invalid_token")


def test_hs512_header(server, user):
    tok = make_jwt(claims_for(user), alg="HS512")
    assert_problem(me(server, tok), 401, "invalid_token")
    # An HS512 header over an HS256 MAC is refused as well.
    tok = make_jwt(claims_for(user), header={"alg": "HS512", "typ": "JWT"})
    assert_problem(me(server, tok), 401, "invalid_token")


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_missing_claims(server, user, missing):
    tok = make_jwt(claims_for(user, **{missing: None}))
    assert_problem(me(server, tok), 401, "invalid_token")


def test_wrong_claim_types(server, user):
    now = int(time.time())
    for over in ({"exp": str(now + 300)}, {"sub": 12345},
                 {"sub": "not-a-uuid"}):
        tok = make_jwt(claims_for(user, **over))
        assert_problem(me(server, tok), 401, "invalid_token")


def test_token_for_unknown_user(server):
    tok = make_jwt({"sub": str(uuid.uuid4()), "iat": int(time.time()),
                    "exp": int(time.time()) + 300})
    assert_problem(me(server, tok), 401, "invalid_token")


def test_unknown_and_deleted_api_keys(server, user):
    assert_problem(me(server, "crl_" + "A" * 43), 401, "invalid_token")
    assert_problem(me(server, "crl_"), 401, "invalid_token")
    created = server.post("/auth/api-keys", json={"name": "doomed"},
                          token=user.access).json()
    assert me(server, created["key"]).status_code == 200
    assert server.delete(f"/auth/api-keys/{created['id']}",
                         token=user.access).status_code == 204
    assert_problem(me(server, created["key"]), 401, "invalid_token")


def test_authorization_scheme_variants(server, user):
    r = server.get("/auth/me", headers={"Authorization":
                                        "bearer " + user.access})
    assert r.status_code == 200, "the scheme name is case-insensitive"
    r = server.get("/auth/me", headers={"Authorization": "Basic dTpw"})
    assert r.status_code == 401
    r = server.get("/auth/me", headers={"Authorization": user.access})
    assert r.status_code == 401


def test_query_token_not_accepted_on_ordinary_routes(server, user):
    r = server.get(f"/auth/me?access_token={user.access}")
    assert_problem(r, 401, "unauthorized")


def test_jwt_key_from_generated_key_file(make_server):
    """Without CORRAL_JWT_SECRET the key is 32 random bytes kept as 64 hex
    digits in data_dir/keys/jwt.key: tokens signed with them verify, and the
    key survives a restart."""
    srv = make_server(env={"CORRAL_JWT_SECRET": None})
    u = register(srv)
    with open(f"{srv.data_dir}/keys/jwt.key") as f:
        hexkey = f.read().strip()
    assert len(hexkey) == 64
    key = bytes.fromhex(hexkey)
    assert me(srv, make_jwt(claims_for(u), key=key)).status_code == 200
    assert_problem(me(srv, make_jwt(claims_for(u))), 401, "invalid_token")
    # The same data dir after a restart: old tokens stay valid.
    srv.stop()
    srv.assert_clean_exit()
    srv.start()
    assert me(srv, u.access).status_code == 200


# ------------------------------------------------------------ bodies

JSON_CT = {"Content-Type": "application/json"}

MALFORMED = {
    "truncated": b'{"email": "a@example.com", "password": "12345678"',
    "trailing_garbage": b'{"email": "a@example.com", "password": "x"} xyz',
    "two_values": b'{"email": "a@example.com"}{"password": "x"}',
    "bad_literal": b'{"a":tru}',
    "leading_zero": b'{"a":01}',
    "single_quotes": b"{'email': 'a@example.com'}",
    "trailing_comma": b'{"email": "a@example.com",}',
    "unquoted_key": b'{email: "a@example.com"}',
    "invalid_utf8": b'{"email": "\xff\xfe@example.com", "password": "x"}',
    "overlong_utf8": b'{"email": "\xc0\xafx@example.com", "password": "x"}',
    "raw_control_char": b'{"email": "a\x01@example.com", "password": "x"}',
    "bad_escape": b'{"email": "a\\q@example.com", "password": "x"}',
    "array": b'[{"email": "a@example.com", "password": "12345678"}]',
    "string": b'"hello"',
    "number": b"42",
    "null": b"null",
    "empty": b"",
    "whitespace": b"   ",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_json_400(server, name):
    r = server.post("/auth/login", data=MALFORMED[name], headers=JSON_CT)
    assert_problem(r, 400, "invalid_json")


def test_malformed_register_creates_nothing(server):
    email = unique_email("mal")
    body = json.dumps({"email": email, "password": "long-enough-1"})
    r = server.post("/auth/register", data=body[:-1].encode(),
                    headers=JSON_CT)
    assert_problem(r, 400, "invalid_json")
    r = server.post("/auth/register", data=(body + "]").encode(),
                    headers=JSON_CT)
    assert_problem(r, 400, "invalid_json")
    assert server.db.scalar("SELECT count(*) FROM users WHERE email = %s",
                            (email,)) == 0


def test_deep_json_400(server):
    depth = 32 + 8  # CORRAL_JSON_MAX_DEPTH defaults to 32
    deep = "[" * depth + "]" * depth
    doc = '{"email": "a@example.com", "password": "x", "x": %s}' % deep
    r = server.post("/auth/login", data=doc.encode(), headers=JSON_CT)
    assert_problem(r, 400)
    deep = '{"a":' * depth + "1" + "}" * depth
    r = server.post("/auth/login", data=deep.encode(), headers=JSON_CT)
    assert_problem(r, 400)
    # Moderate nesting is fine.
    shallow = "[" * 8 + "]" * 8
    doc = ('{"email": "%s", "password": "x", "x": %s}'
           % (unique_email(), shallow))
    r = server.post("/auth/login", data=doc.encode(), headers=JSON_CT)
    assert_problem(r, 401, "invalid_credentials")


def test_json_max_depth_setting(make_server):
    srv = make_server(env={"CORRAL_JSON_MAX_DEPTH": "4"})
    doc = '{"email": "%s", "password": "x", "x": %s}'
    r = srv.post("/auth/login", data=(doc % (unique_email(), "[[[[[[]]]]]]"))
                 .encode(), headers=JSON_CT)
    assert_problem(r, 400)
    r = srv.post("/auth/login", data=(doc % (unique_email(), "[1]")).encode(),
                 headers=JSON_CT)
    assert_problem(r, 401, "invalid_credentials")


def test_valid_unicode_is_accepted(server):
    email = unique_email("uni")
    doc = {"email": email, "password": "pässwörd-✓",
           "display_name": "Zoë \u00e9\U0001F600"}
    r = server.post("/auth/register",
                    data=json.dumps(doc, ensure_ascii=False).encode(),
                    headers=JSON_CT)
    assert r.status_code == 201, r.text
    assert r.json()["user"]["display_name"] == "Zoë \u00e9\U0001F600"
    # The same password sent with \u escapes is the same password.
    r = server.post("/auth/login",
                    data=json.dumps({"email": email,
                                     "password": "pässwörd-✓"}).encode(),
                    headers=JSON_CT)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("ctype", [None, "text/plain",
                                   "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x",
                                   "application/jsonx",
                                   "application/json-patch+json"])
def test_wrong_content_type_415(server, ctype):
    body = json.dumps({"email": unique_email(), "password": "long-enough-1"})
    headers = {} if ctype is None else {"Content-Type": ctype}
    # requests adds no Content-Type for bytes, so None really means none.
    r = requests.post(server.api_url("/auth/register"), data=body.encode(),
                      headers=headers, timeout=30)
    assert_problem(r, 415, "unsupported_media_type")


def test_json_content_type_with_charset_accepted(server):
    email = unique_email()
    for ctype in ("application/json; charset=utf-8",
                  "Application/JSON;charset=UTF-8"):
        r = server.post("/auth/login",
                        data=json.dumps({"email": email,
                                         "password": "x"}).encode(),
                        headers={"Content-Type": ctype})
        assert_problem(r, 401, "invalid_credentials")


def test_415_creates_nothing(server):
    email = unique_email("ct")
    r = server.post("/auth/register",
                    data=json.dumps({"email": email,
                                     "password": "long-enough-1"}).encode(),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert server.db.scalar("SELECT count(*) FROM users WHERE email = %s",
                            (email,)) == 0


def test_auth_checked_on_api_key_routes(server):
    for method, path in (("GET", "/auth/api-keys"),
                         ("POST", "/auth/api-keys"),
                         ("DELETE", f"/auth/api-keys/{uuid.uuid4()}")):
        r = server.request(method, path, json={"name": "x"})
        assert_problem(r, 401, "unauthorized")
