"""Models and prices (GET /models, PUT /admin/models/{model}) and the
admin's users (GET /admin/users, PATCH /admin/users/{id}): listing,
upserts, validation that changes nothing, non-admins refused, and
disabling a user taking effect at once (tokens, API keys and open
streams)."""

import uuid

import pytest

from conftest import _TEST_SERVERS, assert_problem, register, serve
from pipeline_util import SSE

PRICES = {"input": 1.5, "output": 7, "cache_write": 1.875, "cache_read": 0.15}
MODEL_KEYS = {"id", "display_name", "enabled", "price_per_mtok"}
USER_KEYS = {"id", "email", "display_name", "role", "disabled",
             "monthly_budget_cap_usd", "created_at"}


@pytest.fixture(scope="module")
def srv(cluster, logdir):
    """A server of its own: its first registered user is the admin."""
    yield from serve(cluster, logdir, "admin",
                     {"CORRAL_ACCESS_TOKEN_TTL": "600"})


@pytest.fixture(scope="module")
def admin(srv):
    a = register(srv)
    assert a.role == "admin"
    return a


@pytest.fixture
def user(srv, admin):
    _TEST_SERVERS.append(srv)
    return register(srv)


def walk(srv, token, path, limit):
    items, cursor = [], None
    for _ in range(100):
        params = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = srv.get(path, token=token, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    pytest.fail("paging did not end")


def put_model(srv, token, model, body):
    return srv.request("PUT", f"/admin/models/{model}", token=token,
                       json=body)


def model_rows(srv):
    return srv.db.query("SELECT id, display_name, enabled, price_input,"
                        " price_output, price_cache_write, price_cache_read"
                        " FROM models ORDER BY id")


def user_rows(srv):
    return srv.db.query("SELECT id, role, disabled, monthly_budget_cap_usd"
                        " FROM users ORDER BY id")


# ----------------------------------------------------------------- models

def test_models_list_seeded(srv, user):
    items = walk(srv, user.access, "/models", 50)
    ids = [m["id"] for m in items]
    assert ids == sorted(ids)
    assert "claude-sonnet-4-5" in ids
    for m in items:
        assert set(m) == MODEL_KEYS and m["enabled"] is True
        assert set(m["price_per_mtok"]) == set(PRICES)
    sonnet = next(m for m in items if m["id"] == "claude-sonnet-4-5")
    assert sonnet["price_per_mtok"] == {"input": 3, "output": 15,
                                        "cache_write": 3.75,
                                        "cache_read": 0.3}
    # Paging one by one gives the same list.
    assert walk(srv, user.access, "/models", 1) == items


def test_model_upsert_and_visibility(srv, admin, user):
    mid = "corral-test-" + uuid.uuid4().hex[:8]
    r = put_model(srv, admin.access, mid, {"price_per_mtok": PRICES})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": mid, "display_name": mid, "enabled": True,
                        "price_per_mtok": PRICES}
    r = put_model(srv, admin.access, mid,
                  {"display_name": "Test", "enabled": False,
                   "price_per_mtok": dict(PRICES, output=9)})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": mid, "display_name": "Test", "enabled": False,
                        "price_per_mtok": dict(PRICES, output=9)}
    # Absent display_name and enabled are kept on replace.
    r = put_model(srv, admin.access, mid, {"price_per_mtok": PRICES})
    assert r.json()["display_name"] == "Test"
    assert r.json()["enabled"] is False
    # Disabled: admins see it, users do not.
    assert mid in [m["id"] for m in walk(srv, admin.access, "/models", 200)]
    assert mid not in [m["id"] for m in walk(srv, user.access, "/models",
                                             200)]
    r = put_model(srv, admin.access, mid,
                  {"enabled": True, "price_per_mtok": PRICES})
    assert mid in [m["id"] for m in walk(srv, user.access, "/models", 200)]


@pytest.mark.parametrize("model,body,status", [
    ("Bad-Upper", {"price_per_mtok": PRICES}, 422),
    ("-x", {"price_per_mtok": PRICES}, 422),
    ("a" * 101, {"price_per_mtok": PRICES}, 422),
    ("ok-model", {}, 422),
    ("ok-model", {"price_per_mtok": dict(PRICES, input=-1)}, 422),
    ("ok-model", {"price_per_mtok": dict(PRICES, input="1")}, 422),
    ("ok-model", {"price_per_mtok": dict(PRICES, input=1e7)}, 422),
    ("ok-model", {"price_per_mtok": {"input": 1, "output": 1,
                                     "cache_write": 1}}, 422),
    ("ok-model", {"price_per_mtok": dict(PRICES, extra=1)}, 422),
    ("ok-model", {"price_per_mtok": PRICES, "enabled": "yes"}, 422),
    ("ok-model", {"price_per_mtok": PRICES, "display_name": ""}, 422),
    ("ok-model", {"price_per_mtok": PRICES, "display_name": 5}, 422),
    ("ok-model", {"price_per_mtok": PRICES, "colour": "x"}, 422),
    ("claude-sonnet-4-5", {"price_per_mtok": dict(PRICES, cache_read=None)},
     422)])
def test_model_put_bad_input_changes_nothing(srv, admin, model, body,
                                             status):
    before = model_rows(srv)
    r = put_model(srv, admin.access, model, body)
    assert_problem(r, status, "validation_failed")
    assert model_rows(srv) == before


def test_model_put_needs_admin(srv, user):
    before = model_rows(srv)
    r = put_model(srv, user.access, "claude-sonnet-4-5",
                  {"price_per_mtok": dict(PRICES, input=0)})
    assert_problem(r, 403, "admin_only")
    r = put_model(srv, None, "claude-sonnet-4-5", {"price_per_mtok": PRICES})
    assert_problem(r, 401)
    assert_problem(srv.get("/models"), 401)
    assert model_rows(srv) == before


def test_models_bad_query(srv, user):
    assert_problem(srv.get("/models", token=user.access,
                           params={"limit": 0}), 400, "bad_query")
    assert_problem(srv.get("/models", token=user.access,
                           params={"cursor": "!!"}), 400, "bad_query")


# ------------------------------------------------------------------ users

def test_users_list_oldest_first(srv, admin, user):
    more = [register(srv) for _ in range(3)]
    items = walk(srv, admin.access, "/admin/users", 2)
    for u in items:
        assert set(u) == USER_KEYS
    ids = [u["id"] for u in items]
    assert len(ids) == len(set(ids))
    assert ids[0] == admin.id
    created = [u["created_at"] for u in items]
    assert created == sorted(created)
    pos = [ids.index(x.id) for x in [user] + more]
    assert pos == sorted(pos)
    me = items[0]
    assert me["role"] == "admin" and me["disabled"] is False
    assert me["monthly_budget_cap_usd"] is None
    assert walk(srv, admin.access, "/admin/users", 200) == items


def test_users_endpoints_need_admin(srv, user):
    before = user_rows(srv)
    assert_problem(srv.get("/admin/users", token=user.access), 403,
                   "admin_only")
    r = srv.request("PATCH", f"/admin/users/{user.id}", token=user.access,
                    json={"role": "admin"})
    assert_problem(r, 403, "admin_only")
    assert_problem(srv.get("/admin/users"), 401)
    assert user_rows(srv) == before
    assert_problem(srv.get("/admin/users", token=user.access,
                           params={"cursor": "!!"}), 403)


def test_users_bad_cursor(srv, admin):
    import base64
    bad = base64.urlsafe_b64encode(b"not-a-uuid").rstrip(b"=").decode()
    assert_problem(srv.get("/admin/users", token=admin.access,
                           params={"cursor": bad}), 400, "bad_query")


def patch(srv, admin, uid, body):
    return srv.request("PATCH", f"/admin/users/{uid}", token=admin.access,
                       json=body)


def test_patch_role_and_cap(srv, admin, user):
    r = patch(srv, admin, user.id, {"role": "admin",
                                    "monthly_budget_cap_usd": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_KEYS
    assert (body["id"], body["role"], body["monthly_budget_cap_usd"]) == \
        (user.id, "admin", 20)
    # The new role applies at once (the middleware reads the row).
    assert srv.get("/admin/users", token=user.access).status_code == 200
    r = patch(srv, admin, user.id, {"role": "user",
                                    "monthly_budget_cap_usd": None})
    assert (r.json()["role"], r.json()["monthly_budget_cap_usd"]) == \
        ("user", None)
    assert srv.get("/admin/users", token=user.access).status_code == 403
    # Empty patch: unchanged, 200.
    assert patch(srv, admin, user.id, {}).json() == r.json()


@pytest.mark.parametrize("body", [
    {"role": "root"}, {"role": 1}, {"disabled": "yes"},
    {"monthly_budget_cap_usd": -1}, {"monthly_budget_cap_usd": "5"},
    {"monthly_budget_cap_usd": 1e9}, {"email": "x@example.com"},
    {"role": "admin", "disabled": 1}])
def test_patch_bad_input_changes_nothing(srv, admin, user, body):
    before = user_rows(srv)
    assert_problem(patch(srv, admin, user.id, body), 422,
                   "validation_failed")
    assert user_rows(srv) == before


def test_patch_unknown_user(srv, admin):
    before = user_rows(srv)
    assert_problem(patch(srv, admin, str(uuid.uuid4()), {"disabled": True}),
                   404, "not_found")
    assert_problem(patch(srv, admin, "not-a-uuid", {"disabled": True}), 404)
    assert user_rows(srv) == before


def test_admin_cannot_lock_self_out(srv, admin):
    before = user_rows(srv)
    for body in ({"disabled": True}, {"role": "user"}):
        assert_problem(patch(srv, admin, admin.id, body), 409,
                       "self_lockout")
        assert_problem(patch(srv, admin, admin.id.upper(), body), 409,
                       "self_lockout")
    assert user_rows(srv) == before
    # Harmless changes to oneself are fine.
    r = patch(srv, admin, admin.id, {"monthly_budget_cap_usd": 3})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    patch(srv, admin, admin.id, {"monthly_budget_cap_usd": None})


def test_disable_takes_effect_at_once(srv, admin, user):
    bystander = register(srv)
    chat = srv.post("/chats", json={}, token=user.access).json()
    other_chat = srv.post("/chats", json={}, token=bystander.access).json()
    r = srv.post("/auth/api-keys", json={"name": "k"}, token=user.access)
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    stream = SSE(srv, chat["id"], user.access)
    other = SSE(srv, other_chat["id"], bystander.access)
    try:
        assert stream.status == 200 and other.status == 200
        r = patch(srv, admin, user.id, {"disabled": True})
        assert r.status_code == 200, r.text
        assert r.json()["disabled"] is True
        evs = stream.until(lambda e: e.get("event") == "error", timeout=10)
        assert evs[-1]["data"]["code"] == "user_disabled"
        assert stream.closed.wait(10), "the stream stayed open"
        for token in (user.access, key):
            assert_problem(srv.get("/auth/me", token=token), 401,
                           "user_disabled")
        r = SSE(srv, chat["id"], user.access)
        assert r.status == 401
        # Another user's stream is untouched.
        assert not other.closed.is_set()
        assert srv.get("/auth/me", token=bystander.access).status_code == 200
        # Enabled again: the same token works.
        r = patch(srv, admin, user.id, {"disabled": False})
        assert r.json()["disabled"] is False
        assert srv.get("/auth/me", token=user.access).status_code == 200
    finally:
        stream.close()
        other.close()
