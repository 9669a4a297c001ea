"""Accounts and sessions (API.md "Auth"): register, login, refresh with
rotation and reuse detection, logout, password change, me."""

import base64
import concurrent.futures
import datetime
import json
import time

import pytest

from conftest import (RFC3339_RE, UUID_RE, assert_problem, login, register,
                      unique_email)

USER_KEYS = {"id", "email", "display_name", "role", "created_at"}


def check_session(body, email=None, ttl=600):
    assert set(body) >= {"user", "access_token", "refresh_token",
                         "token_type", "expires_in"}, body
    user = body["user"]
    assert set(user) == USER_KEYS, user
    assert UUID_RE.match(user["id"]), user
    assert RFC3339_RE.match(user["created_at"]), user
    assert user["role"] in ("user", "admin")
    if email is not None:
        assert user["email"] == email
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == ttl
    assert isinstance(body["access_token"], str)
    assert body["access_token"].count(".") == 2
    assert isinstance(body["refresh_token"], str)
    assert len(body["refresh_token"]) >= 20
    assert not body["refresh_token"].startswith("crl_")


# ------------------------------------------------------------- register

def test_register_creates_user_and_session(server):
    email = unique_email("MiXed")
    r = server.post("/auth/register", json={"email": email.upper(),
                                            "password": "correct horse",
                                            "display_name": "Ada L."})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    check_session(body, email=email.lower())
    assert body["user"]["display_name"] == "Ada L."
    created = datetime.datetime.fromisoformat(
        body["user"]["created_at"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - created).total_seconds()) < 120
    # The database holds the user, lower-cased, and only hashes.
    rows = server.db.query(
        "SELECT id::text, email, display_name, password_hash, role, disabled"
        " FROM users WHERE email = %s", (email.lower(),))
    assert len(rows) == 1
    uid, db_email, name, pw_hash, role, disabled = rows[0]
    assert uid == body["user"]["id"] and db_email == email.lower()
    assert name == "Ada L." and role == body["user"]["role"]
    assert disabled is False
    assert "correct horse" not in pw_hash and len(pw_hash) > 20
    tokens = server.db.query("SELECT token_hash, revoked_at, rotated_at FROM"
                             " refresh_tokens WHERE user_id = %s", (uid,))
    assert len(tokens) == 1
    assert body["refresh_token"] not in tokens[0][0]
    assert tokens[0][1] is None and tokens[0][2] is None
    # The access token works.
    me = server.get("/auth/me", token=body["access_token"])
    assert me.status_code == 200, me.text
    assert me.json() == body["user"]


def test_register_without_display_name(server):
    user = register(server)
    assert isinstance(user.body["user"]["display_name"], (str, type(None)))


def test_first_user_is_admin_then_users(make_server):
    srv = make_server()
    first = register(srv)
    second = register(srv)
    third = register(srv)
    assert first.role == "admin"
    assert second.role == "user" and third.role == "user"
    roles = dict(srv.db.query("SELECT email, role FROM users"))
    assert roles == {first.email: "admin", second.email: "user",
                     third.email: "user"}
    me = srv.get("/auth/me", token=first.access).json()
    assert me["role"] == "admin"


def test_concurrent_first_registrations_make_one_admin(make_server):
    srv = make_server()
    emails = [unique_email("race") for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(len(emails)) as pool:
        results = list(pool.map(
            lambda e: srv.post("/auth/register",
                               json={"email": e, "password": "racing-pw-1"}),
            emails))
    assert [r.status_code for r in results] == [201] * len(emails), \
        [r.text for r in results]
    roles = [r.json()["user"]["role"] for r in results]
    assert roles.count("admin") == 1, roles
    assert srv.db.scalar("SELECT count(*) FROM users WHERE role = 'admin'") \
        == 1


def test_register_duplicate_email_409(server):
    user = register(server)
    for email in (user.email, user.email.upper()):
        r = server.post("/auth/register", json={"email": email,
                                                "password": "another-pw-1"})
        assert_problem(r, 409, "email_taken")
    assert server.db.scalar("SELECT count(*) FROM users WHERE email = %s",
                            (user.email,)) == 1
    # The original password still works: the duplicate changed nothing.
    assert login(server, user.email, user.password).status_code == 200


@pytest.mark.parametrize("email", ["not-an-email", "a@@example.com",
                                   "@example.com", "a b@example.com",
                                   "user@"])
def test_register_invalid_email_422(server, email):
    r = server.post("/auth/register", json={"email": email,
                                            "password": "long-enough-1"})
    body = assert_problem(r, 422, "invalid_email")
    assert "email" in body["detail"]


def test_register_weak_password_422(server):
    email = unique_email()
    r = server.post("/auth/register", json={"email": email,
                                            "password": "seven77"})
    body = assert_problem(r, 422, "weak_password")
    assert "password" in body["detail"]
    assert server.db.scalar("SELECT count(*) FROM users WHERE email = %s",
                            (email,)) == 0
    # Eight characters are enough.
    register(server, email=email, password="eight888")


@pytest.mark.parametrize("payload,field", [
    ({"email": 42, "password": "long-enough-1"}, "email"),
    ({"email": ["a@b.c"], "password": "long-enough-1"}, "email"),
    ({"password": "long-enough-1"}, "email"),
    ({"email": "ok@example.com"}, "password"),
    ({"email": "ok@example.com", "password": 12345678}, "password"),
    ({"email": "ok@example.com", "password": None}, "password"),
    ({"email": "ok@example.com", "password": "long-enough-1",
      "display_name": 7}, "display_name"),
])
def test_register_validation_failed_names_field(server, payload, field):
    r = server.post("/auth/register", json=payload)
    body = assert_problem(r, 422, "validation_failed")
    assert field in body["detail"], body


# ---------------------------------------------------------------- login

def test_login(server):
    user = register(server)
    r = login(server, user.email.upper(), user.password)
    assert r.status_code == 200, r.text
    body = r.json()
    check_session(body, email=user.email)
    assert body["user"] == user.body["user"]
    assert body["refresh_token"] != user.refresh
    me = server.get("/auth/me", token=body["access_token"])
    assert me.status_code == 200 and me.json()["id"] == user.id
    # A login starts a new session: two refresh tokens now.
    assert server.db.scalar("SELECT count(DISTINCT family_id) FROM "
                            "refresh_tokens WHERE user_id = %s",
                            (user.id,)) == 2


def test_login_wrong_password_and_unknown_email_answer_alike(server):
    user = register(server)
    wrong = login(server, user.email, user.password + "x")
    unknown = login(server, unique_email("ghost"), user.password)
    b1 = assert_problem(wrong, 401, "invalid_credentials")
    b2 = assert_problem(unknown, 401, "invalid_credentials")
    assert b1 == b2
    assert "access_token" not in wrong.text


def test_login_validation(server):
    assert_problem(server.post("/auth/login", json={"email": "a@b.co"}),
                   422, "validation_failed")
    assert_problem(server.post("/auth/login",
                               json={"email": 1, "password": "x"}),
                   422, "validation_failed")


def test_disabled_user(make_server):
    srv = make_server()
    admin = register(srv)  # the first user
    user = register(srv)
    key = srv.post("/auth/api-keys", json={"name": "k"},
                   token=user.access).json()["key"]
    # Both credentials are checked once, so the auth cache knows them.
    assert srv.get("/auth/me", token=user.access).status_code == 200
    assert srv.get("/auth/me", token=key).status_code == 200

    def set_disabled(flag):
        r = srv.request("PATCH", f"/admin/users/{user.id}",
                        json={"disabled": flag}, token=admin.access)
        assert r.status_code == 200, r.text

    set_disabled(True)
    assert_problem(login(srv, user.email, user.password), 401,
                   "user_disabled")
    # Existing credentials are cut off at once.
    assert_problem(srv.get("/auth/me", token=user.access), 401,
                   "user_disabled")
    assert_problem(srv.get("/auth/me", token=key), 401, "user_disabled")
    r = srv.post("/auth/refresh", json={"refresh_token": user.refresh})
    assert r.status_code == 401, r.text
    set_disabled(False)
    assert login(srv, user.email, user.password).status_code == 200
    assert srv.get("/auth/me", token=key).status_code == 200


def test_status_changed_in_the_database_applies_within_the_cache_ttl(
        make_server):
    srv = make_server(env={"CORRAL_AUTH_CACHE_TTL_MS": "300"})
    user = register(srv)
    assert srv.get("/auth/me", token=user.access).status_code == 200
    srv.db.query("UPDATE users SET disabled = true WHERE id = %s",
                 (user.id,))
    deadline = time.time() + 5
    while srv.get("/auth/me", token=user.access).status_code == 200:
        assert time.time() < deadline, "still accepted after the TTL"
        time.sleep(0.05)
    assert_problem(srv.get("/auth/me", token=user.access), 401,
                   "user_disabled")


# --------------------------------------------------------------- refresh

def test_refresh_rotates(server):
    user = register(server)
    r = server.post("/auth/refresh", json={"refresh_token": user.refresh})
    assert r.status_code == 200, r.text
    body = r.json()
    check_session(body, email=user.email)
    assert body["refresh_token"] != user.refresh
    assert body["user"]["id"] == user.id
    assert server.get("/auth/me", token=body["access_token"]).status_code \
        == 200
    rows = server.db.query("SELECT rotated_at IS NOT NULL, revoked_at IS NULL,"
                           " family_id FROM refresh_tokens WHERE user_id = %s"
                           " ORDER BY created_at, id", (user.id,))
    assert len(rows) == 2
    assert rows[0][0] is True and rows[1][0] is False  # old one rotated
    assert rows[0][2] == rows[1][2]  # same family
    # A chain of rotations keeps working.
    nxt = server.post("/auth/refresh",
                      json={"refresh_token": body["refresh_token"]})
    assert nxt.status_code == 200, nxt.text


def test_refresh_reuse_revokes_family(server):
    user = register(server)
    second = server.post("/auth/refresh",
                         json={"refresh_token": user.refresh}).json()
    third = server.post("/auth/refresh",
                        json={"refresh_token": second["refresh_token"]}).json()
    # An unrelated session of the same user must survive.
    other = login(server, user.email, user.password).json()
    # Presenting the first (rotated) token again is reuse.
    r = server.post("/auth/refresh", json={"refresh_token": user.refresh})
    assert_problem(r, 401, "refresh_token_reused")
    # The whole family is now revoked, the newest token included.
    r = server.post("/auth/refresh",
                    json={"refresh_token": third["refresh_token"]})
    assert_problem(r, 401, "invalid_refresh_token")
    family = server.db.query(
        "SELECT family_id FROM refresh_tokens WHERE user_id = %s"
        " GROUP BY family_id HAVING count(*) = 3", (user.id,))
    assert len(family) == 1
    unrevoked = server.db.scalar(
        "SELECT count(*) FROM refresh_tokens WHERE family_id = %s"
        " AND revoked_at IS NULL", (family[0][0],))
    assert unrevoked == 0
    r = server.post("/auth/refresh",
                    json={"refresh_token": other["refresh_token"]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("token", ["garbage", "x" * 43,
                                   "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
                                   "crl_notarefreshtoken"])
def test_refresh_garbage_401(server, token):
    r = server.post("/auth/refresh", json={"refresh_token": token})
    assert_problem(r, 401, "invalid_refresh_token")


def test_refresh_validation(server):
    assert_problem(server.post("/auth/refresh", json={}), 422,
                   "validation_failed")
    assert_problem(server.post("/auth/refresh", json={"refresh_token": 5}),
                   422, "validation_failed")


def test_access_token_is_not_a_refresh_token(server):
    user = register(server)
    r = server.post("/auth/refresh", json={"refresh_token": user.access})
    assert r.status_code == 401


# ---------------------------------------------------------------- logout

def test_logout(server):
    user = register(server)
    other = login(server, user.email, user.password).json()
    r = server.post("/auth/logout", json={"refresh_token": user.refresh})
    assert r.status_code == 204, r.text
    assert r.content == b""
    r = server.post("/auth/refresh", json={"refresh_token": user.refresh})
    assert_problem(r, 401, "invalid_refresh_token")
    # Only that session ended.
    r = server.post("/auth/refresh",
                    json={"refresh_token": other["refresh_token"]})
    assert r.status_code == 200, r.text


def test_logout_after_rotation_ends_the_session(server):
    user = register(server)
    newer = server.post("/auth/refresh",
                        json={"refresh_token": user.refresh}).json()
    r = server.post("/auth/logout",
                    json={"refresh_token": newer["refresh_token"]})
    assert r.status_code == 204
    r = server.post("/auth/refresh",
                    json={"refresh_token": newer["refresh_token"]})
    assert r.status_code == 401


# --------------------------------------------------------- password change

def test_password_change(server):
    user = register(server, password="old-password-1")
    other = login(server, user.email, "old-password-1").json()
    r = server.post("/auth/password",
                    json={"current_password": "old-password-1",
                          "new_password": "new-password-2"},
                    token=user.access)
    assert r.status_code == 204, r.text
    # Every refresh token of the user is revoked.
    assert server.db.scalar("SELECT count(*) FROM refresh_tokens WHERE"
                            " user_id = %s AND revoked_at IS NULL",
                            (user.id,)) == 0
    for tok in (user.refresh, other["refresh_token"]):
        r = server.post("/auth/refresh", json={"refresh_token": tok})
        assert r.status_code == 401, r.text
    assert_problem(login(server, user.email, "old-password-1"), 401,
                   "invalid_credentials")
    r = login(server, user.email, "new-password-2")
    assert r.status_code == 200, r.text


def test_password_change_wrong_current(server):
    user = register(server, password="right-password")
    r = server.post("/auth/password",
                    json={"current_password": "wrong-password",
                          "new_password": "whatever-new-1"},
                    token=user.access)
    assert_problem(r, 401, "invalid_credentials")
    assert login(server, user.email, "right-password").status_code == 200
    assert server.post("/auth/refresh", json={"refresh_token": user.refresh}
                       ).status_code == 200


def test_password_change_weak_and_unauthenticated(server):
    user = register(server, password="right-password")
    r = server.post("/auth/password",
                    json={"current_password": "right-password",
                          "new_password": "short"},
                    token=user.access)
    body = assert_problem(r, 422, "weak_password")
    assert "new_password" in body["detail"]
    r = server.post("/auth/password",
                    json={"current_password": "right-password",
                          "new_password": "long-enough-2"})
    assert_problem(r, 401, "unauthorized")
    assert login(server, user.email, "right-password").status_code == 200


def test_password_change_with_api_key(server):
    user = register(server, password="right-password")
    key = server.post("/auth/api-keys", json={"name": "pw"},
                      token=user.access).json()["key"]
    r = server.post("/auth/password",
                    json={"current_password": "right-password",
                          "new_password": "changed-by-key"}, token=key)
    assert r.status_code == 204, r.text
    assert login(server, user.email, "changed-by-key").status_code == 200


# -------------------------------------------------------------------- me

def test_me(server):
    user = register(server, display_name="Me Myself")
    r = server.get("/auth/me", token=user.access)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == USER_KEYS
    assert body == user.body["user"]
    assert body["display_name"] == "Me Myself"


def test_me_requires_auth(server):
    assert_problem(server.get("/auth/me"), 401, "unauthorized")


def test_concurrent_refresh_with_one_token(server):
    """Two uses of one refresh token at once: exactly one rotation wins;
    the other is reuse, which revokes the family (the winner's new token
    included)."""
    user = register(server)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda _: server.post("/auth/refresh",
                                  json={"refresh_token": user.refresh}),
            range(2)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 401], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 401)
    assert_problem(loser, 401, "refresh_token_reused")
    winner = next(r for r in results if r.status_code == 200).json()
    r = server.post("/auth/refresh",
                    json={"refresh_token": winner["refresh_token"]})
    assert_problem(r, 401, "invalid_refresh_token")


def test_expired_refresh_token(server):
    user = register(server)
    server.db.query("UPDATE refresh_tokens SET expires_at = now() - interval"
                    " '1 second' WHERE user_id = %s", (user.id,))
    r = server.post("/auth/refresh", json={"refresh_token": user.refresh})
    assert_problem(r, 401, "invalid_refresh_token")
    # Expiry is not reuse: the family was not revoked.
    assert server.db.scalar("SELECT count(*) FROM refresh_tokens WHERE"
                            " user_id = %s AND revoked_at IS NOT NULL",
                            (user.id,)) == 0


def test_token_lifetimes_follow_config(make_server):
    srv = make_server(env={"CORRAL_ACCESS_TOKEN_TTL": "10",
                           "CORRAL_REFRESH_TOKEN_TTL": "120"})
    user = register(srv)
    assert user.body["expires_in"] == 10
    payload = user.access.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(
        payload + "=" * (-len(payload) % 4)))
    assert claims["exp"] - claims["iat"] == 10
    lifetime = srv.db.scalar(
        "SELECT extract(epoch FROM expires_at - created_at)"
        " FROM refresh_tokens WHERE user_id = %s", (user.id,))
    assert abs(float(lifetime) - 120) < 5
    refreshed = srv.post("/auth/refresh",
                         json={"refresh_token": user.refresh}).json()
    assert refreshed["expires_in"] == 10
