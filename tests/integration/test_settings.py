"""User settings (API.md "Settings, usage, models"): GET and PUT
/settings, the sealed env, MCP server checks, tool rules, budgets,
validation that changes nothing, per-user isolation and chats created
with the settings' defaults."""

import json
import uuid

import pytest

from conftest import _TEST_SERVERS, assert_problem, register, serve

SETTINGS_KEYS = {"default_model", "permission_mode", "system_prompt_append",
                 "env_names", "mcp_servers", "allowed_tools",
                 "disallowed_tools", "allow_background_tools",
                 "monthly_budget_usd", "monthly_budget_cap_usd"}
DEFAULTS = {"default_model": None, "permission_mode": None,
            "system_prompt_append": "", "env_names": [], "mcp_servers": {},
            "allowed_tools": [], "disallowed_tools": [],
            "allow_background_tools": False, "monthly_budget_usd": None,
            "monthly_budget_cap_usd": None}


@pytest.fixture(scope="module")
def srv(cluster, logdir):
    """A server of its own: its first registered user is the admin."""
    yield from serve(cluster, logdir, "settings",
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


def get(srv, u):
    r = srv.get("/settings", token=u.access)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == SETTINGS_KEYS, body
    return body


def put(srv, u, body, expect=200):
    r = srv.request("PUT", "/settings", token=u.access, json=body)
    assert r.status_code == expect, (r.status_code, r.text)
    return r.json() if expect == 200 else r


def row(srv, u):
    rows = srv.db.query("SELECT row_to_json(s)::text FROM user_settings s "
                        "WHERE user_id = %s", (u.id,))
    return rows[0][0] if rows else None


# ------------------------------------------------------------ round trip

def test_defaults_then_round_trip(srv, user):
    assert get(srv, user) == DEFAULTS
    full = {"default_model": "claude-haiku-4-5", "permission_mode": "plan",
            "system_prompt_append": "Be brief.",
            "mcp_servers": {"tools": {"command": "env",
                                      "args": ["-i", "x"],
                                      "env": {"A": "1"}}},
            "allowed_tools": ["Bash(npm test:*)", "Read"],
            "disallowed_tools": ["WebFetch"],
            "allow_background_tools": True, "monthly_budget_usd": 12.5}
    got = put(srv, user, full)
    want = dict(DEFAULTS, **full)
    assert got == want
    assert get(srv, user) == want
    # Absent fields stay; given ones replace.
    got = put(srv, user, {"allowed_tools": [], "permission_mode": "auto"})
    assert got == dict(want, allowed_tools=[], permission_mode="auto")
    # null resets the nullable fields to the server's defaults.
    got = put(srv, user, {"default_model": None, "permission_mode": None,
                          "monthly_budget_usd": None})
    assert got["default_model"] is None and got["permission_mode"] is None
    assert got["monthly_budget_usd"] is None
    assert got["system_prompt_append"] == "Be brief."
    assert put(srv, user, {}) == got


def test_budget_numbers(srv, user):
    assert put(srv, user, {"monthly_budget_usd": 0})[
        "monthly_budget_usd"] == 0
    assert put(srv, user, {"monthly_budget_usd": 1e3})[
        "monthly_budget_usd"] == 1000
    assert put(srv, user, {"monthly_budget_usd": 99999999})[
        "monthly_budget_usd"] == 99999999


# ------------------------------------------------------------------- env

def test_env_write_only_and_sealed(srv, user):
    secret = "sv-" + uuid.uuid4().hex
    other = "ov-" + uuid.uuid4().hex
    got = put(srv, user, {"env": {"GITHUB_TOKEN": secret, "A_VAR": other}})
    assert got["env_names"] == ["A_VAR", "GITHUB_TOKEN"]
    assert secret not in json.dumps(got)
    r = srv.get("/settings", token=user.access)
    assert secret not in r.text and other not in r.text
    stored = row(srv, user)
    assert secret not in stored and other not in stored
    enc = srv.db.scalar("SELECT env_enc::text FROM user_settings "
                        "WHERE user_id = %s", (user.id,))
    enc = json.loads(enc)
    assert set(enc) == {"A_VAR", "GITHUB_TOKEN"}
    for v in enc.values():
        # base64 of a 12-byte nonce, the ciphertext and a 16-byte tag
        import base64
        raw = base64.b64decode(v, validate=True)
        assert len(raw) == 12 + len(secret) + 16
        assert secret.encode() not in raw
    # Merge per key: one replaced, one deleted, one added.
    got = put(srv, user, {"env": {"A_VAR": None, "NEW_ONE": "n",
                                  "GITHUB_TOKEN": "changed"}})
    assert got["env_names"] == ["GITHUB_TOKEN", "NEW_ONE"]
    enc2 = json.loads(srv.db.scalar(
        "SELECT env_enc::text FROM user_settings WHERE user_id = %s",
        (user.id,)))
    assert enc2["GITHUB_TOKEN"] != enc["GITHUB_TOKEN"]
    # Deleting a name that is not there is fine; other fields untouched.
    assert put(srv, user, {"env": {"NOPE": None}})["env_names"] == \
        ["GITHUB_TOKEN", "NEW_ONE"]
    assert secret not in srv.log_text() and other not in srv.log_text()


@pytest.mark.parametrize("name", [
    "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_MAX_RETRIES",
    "LD_PRELOAD", "HOME", "PATH", "path", "LANG", "TERM", "NODE_OPTIONS",
    "CORRAL_SECRET_KEY", "TMPDIR", "SHELL", "USER", "HTTPS_PROXY"])
def test_env_reserved_names(srv, user, name):
    before = row(srv, user)
    secret = "rv-" + uuid.uuid4().hex
    r = put(srv, user, {"env": {name: secret, "OK_NAME": "x"}}, expect=422)
    body = assert_problem(r, 422, "validation_failed")
    assert name in body["detail"]
    assert secret not in r.text
    assert row(srv, user) == before
    assert secret not in srv.log_text()


@pytest.mark.parametrize("env,what", [
    ({"1ABC": "x"}, "names"), ({"A-B": "x"}, "names"), ({"": "x"}, "names"),
    ({"A" * 129: "x"}, "names"), ({"OK": 1}, "OK"), ({"OK": ["x"]}, "OK"),
    ({"OK": "x" * 8193}, "OK"), ({"OK": "a\u0000b"}, "OK"),
    ("x", "env"), (["A"], "env"), (None, "env"),
    ({f"V{i}": "x" for i in range(65)}, "env")])
def test_env_bad_input_changes_nothing(srv, user, env, what):
    put(srv, user, {"env": {"KEEP": "k"}, "system_prompt_append": "p"})
    before = row(srv, user)
    r = put(srv, user, {"env": env, "system_prompt_append": "changed"},
            expect=422)
    assert what in assert_problem(r, 422, "validation_failed")["detail"]
    assert row(srv, user) == before


def test_env_count_limit_after_merge(srv, user):
    put(srv, user, {"env": {f"A{i}": "x" for i in range(60)}})
    before = row(srv, user)
    r = put(srv, user, {"env": {f"B{i}": "x" for i in range(5)}},
            expect=422)
    assert "64" in assert_problem(r, 422, "validation_failed")["detail"]
    assert row(srv, user) == before
    # Deleting and adding in one request: the merged count is what counts.
    got = put(srv, user, {"env": dict({f"A{i}": None for i in range(5)},
                                      **{f"B{i}": "x" for i in range(5)})})
    assert len(got["env_names"]) == 60


# ------------------------------------------------------------------- mcp

@pytest.mark.parametrize("servers,what", [
    ({"s": {"command": "no-such-command-corral-xyz"}}, "s.command"),
    ({"s": {"command": "/usr/bin/no-such-command-corral"}}, "s.command"),
    ({"s": {"command": "/tmp/tool"}}, "s.command"),
    ({"s": {"command": "/usr/../tmp/tool"}}, "s.command"),
    ({"s": {"command": "bin/env"}}, "s.command"),
    ({"s": {"url": "https://example.com/mcp"}}, "stdio"),
    ({"s": {"type": "http", "url": "https://example.com/mcp"}}, "stdio"),
    ({"s": {"type": "sse", "command": "env"}}, "stdio"),
    ({"s": {"command": "env", "extra": 1}}, "unknown"),
    ({"s": {}}, "s command"),
    ({"s": {"command": 5}}, "s command"),
    ({"s": {"command": "env", "args": "x"}}, "args"),
    ({"s": {"command": "env", "args": [1]}}, "args"),
    ({"s": {"command": "env", "env": {"A-B": "x"}}}, "env"),
    ({"s": {"command": "env", "env": {"A": 1}}}, "env"),
    ({"s": "env"}, "object"),
    ({"bad name": {"command": "env"}}, "names"),
    (["env"], "mcp_servers"),
    ({f"s{i}": {"command": "env"} for i in range(17)}, "mcp_servers")])
def test_mcp_refused_changes_nothing(srv, user, servers, what):
    put(srv, user, {"mcp_servers": {"keep": {"command": "/usr/bin/env"}}})
    before = row(srv, user)
    r = put(srv, user, {"mcp_servers": servers}, expect=422)
    assert what in assert_problem(r, 422, "validation_failed")["detail"]
    assert row(srv, user) == before
    assert get(srv, user)["mcp_servers"] == \
        {"keep": {"command": "/usr/bin/env"}}


def test_mcp_accepted_forms(srv, user):
    servers = {"a": {"command": "env"},
               "b": {"command": "/bin/env", "args": [], "env": {}},
               "c": {"command": "/usr/bin/env", "type": "stdio"}}
    got = put(srv, user, {"mcp_servers": servers})["mcp_servers"]
    # type is implied (stdio) and not stored.
    assert got == {"a": {"command": "env"},
                   "b": {"command": "/bin/env", "args": [], "env": {}},
                   "c": {"command": "/usr/bin/env"}}
    assert put(srv, user, {"mcp_servers": {}})["mcp_servers"] == {}


# ----------------------------------------------------------- other fields

@pytest.mark.parametrize("body,what", [
    ({"default_model": "no-such-model"}, "default_model"),
    ({"default_model": "Bad Model"}, "default_model"),
    ({"default_model": 3}, "default_model"),
    ({"permission_mode": "yolo"}, "permission_mode"),
    ({"permission_mode": 1}, "permission_mode"),
    ({"system_prompt_append": None}, "system_prompt_append"),
    ({"system_prompt_append": "x" * 32769}, "system_prompt_append"),
    ({"allowed_tools": "Bash"}, "allowed_tools"),
    ({"allowed_tools": ["Bash("]}, "allowed_tools[0]"),
    ({"disallowed_tools": ["Read", "Ba sh"]}, "disallowed_tools[1]"),
    ({"disallowed_tools": [1]}, "disallowed_tools[0]"),
    ({"allowed_tools": ["Read"] * 129}, "allowed_tools"),
    ({"allow_background_tools": "yes"}, "allow_background_tools"),
    ({"monthly_budget_usd": -1}, "monthly_budget_usd"),
    ({"monthly_budget_usd": "5"}, "monthly_budget_usd"),
    ({"monthly_budget_usd": 1e9}, "monthly_budget_usd"),
    ({"env_names": ["A"]}, "env_names"),
    ({"colour": "blue"}, "unknown"),
    # One bad member spoils an otherwise good request.
    ({"permission_mode": "plan", "allowed_tools": ["Bash(x"]},
     "allowed_tools")])
def test_bad_fields_change_nothing(srv, user, body, what):
    put(srv, user, {"permission_mode": "ask", "allowed_tools": ["Read"],
                    "env": {"KEEP": "k"}})
    before = row(srv, user)
    r = put(srv, user, body, expect=422)
    assert what in assert_problem(r, 422, "validation_failed")["detail"]
    assert row(srv, user) == before


def test_disabled_model_is_refused(srv, user, admin):
    r = srv.request("PUT", "/admin/models/corral-test-off", token=admin.access,
                    json={"enabled": False, "price_per_mtok": {
                        "input": 1, "output": 1, "cache_write": 1,
                        "cache_read": 1}})
    assert r.status_code == 200, r.text
    r = put(srv, user, {"default_model": "corral-test-off"}, expect=422)
    assert "enabled" in assert_problem(r, 422)["detail"]
    assert row(srv, user) is None


def test_budget_cap_is_read_only(srv, user, admin):
    r = put(srv, user, {"monthly_budget_cap_usd": 5}, expect=403)
    assert_problem(r, 403, "admin_only")
    r = put(srv, admin, {"monthly_budget_cap_usd": 5}, expect=422)
    assert "admin/users" in assert_problem(r, 422)["detail"]
    assert row(srv, user) is None
    # The cap an admin sets shows in the user's settings.
    r = srv.request("PATCH", f"/admin/users/{user.id}", token=admin.access,
                    json={"monthly_budget_cap_usd": 7.25})
    assert r.status_code == 200, r.text
    assert get(srv, user)["monthly_budget_cap_usd"] == 7.25


def test_malformed_bodies(srv, user):
    r = srv.request("PUT", "/settings", token=user.access, data="{",
                    headers={"Content-Type": "application/json"})
    assert_problem(r, 400)
    r = srv.request("PUT", "/settings", token=user.access, data="[]",
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    r = srv.request("PUT", "/settings", token=user.access, data="x=1",
                    headers={"Content-Type": "text/plain"})
    assert_problem(r, 415)
    assert_problem(srv.get("/settings"), 401)
    assert_problem(srv.request("PUT", "/settings", json={}), 401)
    assert row(srv, user) is None


# -------------------------------------------------------------- isolation

def test_settings_are_per_user(srv, user):
    other = register(srv)
    put(srv, user, {"system_prompt_append": "mine", "env": {"MINE": "v"},
                    "allowed_tools": ["Read"]})
    assert get(srv, other) == DEFAULTS
    put(srv, other, {"env": {"THEIRS": "w"}})
    assert get(srv, user)["env_names"] == ["MINE"]
    assert get(srv, user)["system_prompt_append"] == "mine"


# -------------------------------------------------------- chat defaults

def test_chat_defaults_come_from_settings(srv, user):
    c = srv.post("/chats", json={}, token=user.access).json()
    assert c["permission_mode"] == "ask"
    server_default = c["model"]
    put(srv, user, {"default_model": "claude-haiku-4-5",
                    "permission_mode": "plan"})
    c = srv.post("/chats", json={}, token=user.access).json()
    assert (c["model"], c["permission_mode"]) == ("claude-haiku-4-5", "plan")
    # Given fields still win.
    c = srv.post("/chats", json={"model": "claude-opus-4-5",
                                 "permission_mode": "auto"},
                 token=user.access).json()
    assert (c["model"], c["permission_mode"]) == ("claude-opus-4-5", "auto")
    put(srv, user, {"default_model": None, "permission_mode": None})
    c = srv.post("/chats", json={}, token=user.access).json()
    assert (c["model"], c["permission_mode"]) == (server_default, "ask")
