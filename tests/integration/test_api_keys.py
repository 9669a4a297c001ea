"""API keys (API.md "Auth"): create, use, list with cursor paging, delete,
and per-user isolation."""

import uuid

import pytest

from conftest import RFC3339_RE, UUID_RE, assert_problem, register

LIST_KEYS = {"id", "name", "prefix", "created_at", "last_used_at"}


def create_key(srv, user, name="key"):
    r = srv.post("/auth/api-keys", json={"name": name}, token=user.access)
    assert r.status_code == 201, r.text
    return r.json()


def list_keys(srv, token, **params):
    r = srv.get("/auth/api-keys", token=token, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"}, body
    return body


def walk(srv, token, limit):
    """Every item over all pages, with a bound on the number of pages."""
    items, cursor = [], None
    for _ in range(100):
        params = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = list_keys(srv, token, **params)
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert isinstance(cursor, str) and cursor
    pytest.fail("pagination did not end")


@pytest.fixture
def user(server):
    return register(server)


def test_create_and_use(server, user):
    r = server.post("/auth/api-keys", json={"name": "laptop"},
                    token=user.access)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) >= {"id", "name", "prefix", "created_at", "key"}, body
    assert UUID_RE.match(body["id"])
    assert body["name"] == "laptop"
    assert RFC3339_RE.match(body["created_at"])
    key = body["key"]
    assert key.startswith("crl_") and len(key) >= 24
    assert body["prefix"].startswith("crl_") and key.startswith(body["prefix"])
    assert len(body["prefix"]) < len(key)
    me = server.get("/auth/me", token=key)
    assert me.status_code == 200, me.text
    assert me.json() == user.body["user"]
    # Stored as a hash only.
    rows = server.db.query("SELECT key_hash, prefix, name, user_id::text FROM"
                           " api_keys WHERE id = %s", (body["id"],))
    assert len(rows) == 1
    key_hash, prefix, name, owner = rows[0]
    assert owner == user.id and name == "laptop" and prefix == body["prefix"]
    assert key not in key_hash and key[len(prefix):] not in key_hash


def test_keys_are_distinct(server, user):
    keys = [create_key(server, user, f"k{i}")["key"] for i in range(5)]
    assert len(set(keys)) == 5
    for k in keys:
        assert server.get("/auth/me", token=k).status_code == 200


def test_list_never_shows_the_key(server, user):
    created = create_key(server, user, "secret-holder")
    r = server.get("/auth/api-keys", token=user.access)
    assert r.status_code == 200
    assert created["key"] not in r.text
    assert created["key"][len(created["prefix"]):] not in r.text
    items = r.json()["items"]
    assert len(items) == 1
    assert set(items[0]) == LIST_KEYS
    assert items[0]["id"] == created["id"]
    assert items[0]["prefix"] == created["prefix"]
    assert items[0]["created_at"] == created["created_at"]
    assert items[0]["last_used_at"] is None
    assert r.json()["next_cursor"] is None


def test_last_used_at_is_recorded(server, user):
    created = create_key(server, user)
    assert server.get("/auth/me", token=created["key"]).status_code == 200
    item = list_keys(server, user.access)["items"][0]
    assert item["last_used_at"] is not None
    assert RFC3339_RE.match(item["last_used_at"])


def test_list_newest_first(server, user):
    ids = [create_key(server, user, f"n{i}")["id"] for i in range(4)]
    items = list_keys(server, user.access)["items"]
    assert [i["id"] for i in items] == list(reversed(ids))
    assert [i["name"] for i in items] == ["n3", "n2", "n1", "n0"]


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pagination_walks_every_key_once(server, user, limit):
    ids = [create_key(server, user, f"p{i}")["id"] for i in range(7)]
    walked = walk(server, user.access, limit)
    got = [i["id"] for i in walked]
    assert got == list(reversed(ids)), "every key once, newest first"
    full = list_keys(server, user.access)["items"]
    assert walked == full


def test_bad_list_parameters(server, user):
    create_key(server, user)
    for params in ({"limit": "abc"}, {"limit": "0"}, {"limit": "-1"},
                   {"cursor": "!!!not-a-cursor!!!"},
                   {"cursor": str(uuid.uuid4()) + "x"}):
        r = server.get("/auth/api-keys", token=user.access, params=params)
        assert_problem(r, 400)


def test_delete(server, user):
    keep = create_key(server, user, "keep")
    doomed = create_key(server, user, "doomed")
    r = server.delete(f"/auth/api-keys/{doomed['id']}", token=user.access)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(server.get("/auth/me", token=doomed["key"]), 401,
                   "invalid_token")
    assert server.get("/auth/me", token=keep["key"]).status_code == 200
    assert [i["id"] for i in list_keys(server, user.access)["items"]] == \
        [keep["id"]]
    assert server.db.scalar("SELECT count(*) FROM api_keys WHERE id = %s",
                            (doomed["id"],)) == 0
    r = server.delete(f"/auth/api-keys/{doomed['id']}", token=user.access)
    assert_problem(r, 404, "not_found")


def test_delete_unknown_ids_404(server, user):
    for kid in (str(uuid.uuid4()), "not-a-uuid", "1"):
        r = server.delete(f"/auth/api-keys/{kid}", token=user.access)
        assert_problem(r, 404, "not_found")


def test_delete_with_the_key_itself(server, user):
    created = create_key(server, user)
    r = server.delete(f"/auth/api-keys/{created['id']}",
                      token=created["key"])
    assert r.status_code == 204
    assert server.get("/auth/me", token=created["key"]).status_code == 401


def test_isolation_between_users(server):
    alice, bob = register(server), register(server)
    a_key = create_key(server, alice, "alice-key")
    b_key = create_key(server, bob, "bob-key")
    # Bob sees only his own keys.
    b_items = list_keys(server, bob.access)["items"]
    assert [i["id"] for i in b_items] == [b_key["id"]]
    # Walking with a cursor does not leak either.
    assert [i["id"] for i in walk(server, bob.access, 1)] == [b_key["id"]]
    # Bob cannot delete Alice's key: 404, and it still works.
    r = server.delete(f"/auth/api-keys/{a_key['id']}", token=bob.access)
    assert_problem(r, 404, "not_found")
    r = server.delete(f"/auth/api-keys/{a_key['id']}", token=b_key["key"])
    assert_problem(r, 404, "not_found")
    assert server.get("/auth/me", token=a_key["key"]).json()["id"] == alice.id
    assert server.db.scalar("SELECT count(*) FROM api_keys WHERE id = %s",
                            (a_key["id"],)) == 1
    # Alice's cursor (her own key id) does not reveal her keys to Bob.
    for _ in range(2):
        create_key(server, alice)
    page = list_keys(server, alice.access, limit=1)
    assert page["next_cursor"]
    other = list_keys(server, bob.access, limit=10, cursor=page["next_cursor"])
    assert all(i["id"] != a_key["id"] for i in other["items"])
    ids_seen_by_bob = {i["id"] for i in other["items"]}
    alice_ids = {i["id"] for i in list_keys(server, alice.access)["items"]}
    assert not ids_seen_by_bob & alice_ids
    # And the key answers as its owner.
    assert server.get("/auth/me", token=b_key["key"]).json()["id"] == bob.id


@pytest.mark.parametrize("payload,code", [
    ({}, "validation_failed"),
    ({"name": None}, "validation_failed"),
    ({"name": 5}, "validation_failed"),
])
def test_create_validation(server, user, payload, code):
    r = server.post("/auth/api-keys", json=payload, token=user.access)
    body = assert_problem(r, 422, code)
    assert "name" in body["detail"]


def test_api_key_can_create_and_list(server, user):
    first = create_key(server, user)
    r = server.post("/auth/api-keys", json={"name": "via-key"},
                    token=first["key"])
    assert r.status_code == 201
    assert len(list_keys(server, first["key"])["items"]) == 2
