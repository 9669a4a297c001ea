"""Chats and reading messages (API.md "Chats", "Messages and runs"):
create, validation, list order and keyset paging, archive filter, get,
patch, soft delete, per-user isolation, status derived from runs, and the
message list and message reads over rows written straight to the
database."""

import base64
import json
import time
import uuid

import pytest

from conftest import RFC3339_RE, UUID_RE, assert_problem, register

CHAT_KEYS = {"id", "title", "model", "permission_mode",
             "system_prompt_append", "pinned", "archived", "status",
             "created_at", "updated_at", "last_activity_at", "sandbox"}
MESSAGE_KEYS = {"id", "chat_id", "role", "origin", "reply_to", "status",
                "content", "attachments", "model", "usage", "cost_usd",
                "error", "created_at", "started_at", "completed_at"}


# ------------------------------------------------------------------ helpers

def create_chat(srv, user, expect=201, **fields):
    r = srv.post("/chats", json=fields, token=user.access)
    assert r.status_code == expect, (r.status_code, r.text)
    return r.json() if expect == 201 else r


def patch_chat(srv, user, chat_id, body):
    return srv.request("PATCH", f"/chats/{chat_id}", token=user.access,
                       json=body)


def get_chat(srv, user, chat_id):
    return srv.get(f"/chats/{chat_id}", token=user.access)


def list_page(srv, token, path="/chats", **params):
    r = srv.get(path, token=token, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"}, body
    return body


def walk(srv, token, limit, path="/chats", **params):
    """Every item over all pages (at most 200 pages)."""
    items, cursor = [], None
    for _ in range(200):
        page_params = dict(params, limit=limit)
        if cursor is not None:
            page_params["cursor"] = cursor
        page = list_page(srv, token, path, **page_params)
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert isinstance(cursor, str) and cursor
        assert page["items"], "a non-final page must not be empty"
    pytest.fail("pagination did not end")


def chat_rows(srv, user):
    """Every chat row of the user, deleted ones included."""
    return srv.db.query("SELECT id::text FROM chats WHERE owner_id = %s",
                        (user.id,))


def set_activity(srv, chat_id, seconds_ago):
    srv.db.query("UPDATE chats SET last_activity_at = "
                 "'2030-01-01T00:00:00Z'::timestamptz - %s * interval '1 s'"
                 " WHERE id = %s", (seconds_ago, chat_id))


def expected_order(srv, user, archived=False):
    """Ids in API.md's list order, computed in Python from the rows."""
    rows = srv.db.query(
        "SELECT id::text, pinned, last_activity_at FROM chats"
        " WHERE owner_id = %s AND deleted_at IS NULL AND archived = %s",
        (user.id, archived))
    rows.sort(key=lambda row: (row[1], row[2], row[0]), reverse=True)
    return [row[0] for row in rows]


def b64url(text):
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def insert_message(srv, chat_id, role, content, created_at, **cols):
    """Writes a message row directly; returns its id. content is any
    JSON-serialisable value; cols may set the other columns."""
    mid = cols.pop("id", None) or str(uuid.uuid4())
    values = {"id": mid, "chat_id": chat_id, "role": role,
              "status": "completed", "content": json.dumps(content),
              "created_at": created_at}
    for key in ("usage", "error", "attachments"):
        if key in cols:
            value = cols.pop(key)
            values[key] = None if value is None else json.dumps(value)
    values.update(cols)
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    srv.db.query(f"INSERT INTO messages ({names}) VALUES ({marks})",
                 tuple(values.values()))
    return mid


def insert_run(srv, chat_id, phase, created_at):
    reply = insert_message(srv, chat_id, "assistant", [], created_at,
                           status="queued")
    srv.db.query("INSERT INTO runs (id, chat_id, reply_message_id, phase,"
                 " created_at) VALUES (%s, %s, %s, %s, %s)",
                 (str(uuid.uuid4()), chat_id, reply, phase, created_at))


def check_chat_shape(chat):
    assert set(chat) == CHAT_KEYS, chat
    assert UUID_RE.match(chat["id"])
    for key in ("created_at", "updated_at", "last_activity_at"):
        assert RFC3339_RE.match(chat[key]), (key, chat[key])
    assert chat["status"] in ("idle", "queued", "running",
                              "awaiting_permission")
    assert chat["sandbox"]["provider"] == "local"
    assert chat["sandbox"]["state"] in ("none", "starting", "running",
                                        "stopped", "error")
    assert isinstance(chat["pinned"], bool)
    assert isinstance(chat["archived"], bool)


@pytest.fixture
def user(server):
    return register(server)


@pytest.fixture
def other(server):
    return register(server)


# ------------------------------------------------------------------- create

def test_create_with_defaults(server, user):
    chat = create_chat(server, user)
    check_chat_shape(chat)
    assert chat["id"][14] == "7", "chat ids are UUIDv7"
    assert chat["title"] == ""
    assert chat["model"] == "claude-sonnet-4-5"
    assert chat["permission_mode"] == "ask"
    assert chat["system_prompt_append"] == ""
    assert chat["pinned"] is False and chat["archived"] is False
    assert chat["status"] == "idle"
    assert chat["sandbox"] == {"provider": "local", "state": "none"}
    assert chat["created_at"] == chat["updated_at"] == \
        chat["last_activity_at"]
    rows = server.db.query(
        "SELECT owner_id::text, session_id::text, prompt_edited,"
        " deleted_at FROM chats WHERE id = %s", (chat["id"],))
    assert len(rows) == 1
    owner, session, edited, deleted = rows[0]
    assert owner == user.id
    assert UUID_RE.match(session) and session != chat["id"]
    assert edited is False and deleted is None


def test_create_with_all_fields(server, user):
    fields = {"title": "Refactor the parser ✓",
              "model": "claude-opus-4-1:beta_2.x",
              "permission_mode": "plan",
              "system_prompt_append": "Answer in French.\nBe brief."}
    chat = create_chat(server, user, **fields, unknown_field=[1, 2])
    check_chat_shape(chat)
    for key, value in fields.items():
        assert chat[key] == value, key
    got = get_chat(server, user, chat["id"])
    assert got.status_code == 200, got.text
    assert got.json() == chat


def test_default_model_comes_from_config(make_server):
    srv = make_server(env={"CORRAL_DEFAULT_MODEL": "house-model:7"})
    u = register(srv)
    assert create_chat(srv, u)["model"] == "house-model:7"
    assert create_chat(srv, u, model="x")["model"] == "x"


def test_create_limits_are_inclusive(server, user):
    chat = create_chat(server, user, title="é" * 200,
                       model="Az09._:-" + "m" * 92,
                       system_prompt_append="p" * 32768)
    assert chat["title"] == "é" * 200
    assert len(chat["model"]) == 100
    assert len(chat["system_prompt_append"]) == 32768
    for mode in ("ask", "auto", "plan"):
        assert create_chat(server, user,
                           permission_mode=mode)["permission_mode"] == mode


INVALID_FIELDS = [
    ({"title": "t" * 201}, "title"),
    ({"title": 42}, "title"),
    ({"title": "a\u0000b"}, "title"),
    ({"model": ""}, "model"),
    ({"model": "m" * 101}, "model"),
    ({"model": "has space"}, "model"),
    ({"model": "slash/model"}, "model"),
    ({"model": "ünïcode"}, "model"),
    ({"model": 3}, "model"),
    ({"permission_mode": "always"}, "permission_mode"),
    ({"permission_mode": ""}, "permission_mode"),
    ({"permission_mode": "ASK"}, "permission_mode"),
    ({"permission_mode": True}, "permission_mode"),
    ({"system_prompt_append": "p" * 32769}, "system_prompt_append"),
    ({"system_prompt_append": ["x"]}, "system_prompt_append"),
    # A valid field first: the whole body is checked before any insert.
    ({"title": "ok", "model": "bad model"}, "model"),
]


@pytest.mark.parametrize("body,field", INVALID_FIELDS)
def test_create_validation(server, user, body, field):
    r = server.post("/chats", json=body, token=user.access)
    problem = assert_problem(r, 422, "validation_failed")
    assert field in problem["detail"], problem
    assert chat_rows(server, user) == []
    assert list_page(server, user.access)["items"] == []


def test_create_needs_a_json_object(server, user):
    r = server.post("/chats", data="[]", token=user.access,
                    headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "invalid_json")
    r = server.post("/chats", data="{", token=user.access,
                    headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "invalid_json")
    assert chat_rows(server, user) == []


def test_unauthenticated_bad_body_gets_401(server):
    """Authentication is checked before the body is parsed: a stranger
    learns nothing from the body's verdict."""
    for data, ctype in [("{", "application/json"), ("x", "text/plain")]:
        r = server.post("/chats", data=data,
                        headers={"Content-Type": ctype})
        assert_problem(r, 401)


def test_unauthenticated(server, user):
    chat = create_chat(server, user)
    cid = chat["id"]
    mid = str(uuid.uuid4())
    for method, path in (("POST", "/chats"), ("GET", "/chats"),
                         ("GET", f"/chats/{cid}"), ("PATCH", f"/chats/{cid}"),
                         ("DELETE", f"/chats/{cid}"),
                         ("GET", f"/chats/{cid}/messages"),
                         ("GET", f"/chats/{cid}/messages/{mid}")):
        r = server.request(method, path, json={} if method in
                           ("POST", "PATCH") else None)
        assert_problem(r, 401)
    assert get_chat(server, user, cid).json() == chat


# --------------------------------------------------------------------- list

def test_list_order_pins_then_activity_then_id(server, user):
    chats = [create_chat(server, user, title=f"c{i}")["id"]
             for i in range(6)]
    a, b, c, d, e, f = chats
    set_activity(server, a, 50)
    set_activity(server, b, 10)
    set_activity(server, c, 30)
    set_activity(server, d, 30)  # ties with c: id decides (desc)
    set_activity(server, e, 40)
    set_activity(server, f, 5)
    for pin in (a, e):
        assert patch_chat(server, user, pin,
                          {"pinned": True}).status_code == 200
    items = list_page(server, user.access)["items"]
    ids = [chat["id"] for chat in items]
    tied = sorted([c, d], reverse=True)
    assert ids == [e, a, f, b] + tied
    assert ids == expected_order(server, user)
    for chat in items:
        check_chat_shape(chat)
    assert [chat["pinned"] for chat in items] == [True, True] + [False] * 4


def test_list_pagination_walks_every_chat_once(server, user):
    ids = [create_chat(server, user, title=f"p{i}")["id"] for i in range(9)]
    # Ties in activity, pins and plain rows, so every part of the key is
    # crossed by some page boundary.
    for i, cid in enumerate(ids):
        set_activity(server, cid, (i // 3) * 10)
    for cid in (ids[1], ids[4], ids[5]):
        patch_chat(server, user, cid, {"pinned": True})
    want = expected_order(server, user)
    assert len(want) == 9
    assert [c["id"] for c in list_page(server, user.access,
                                       limit=200)["items"]] == want
    for limit in (1, 2, 3):
        got = [c["id"] for c in walk(server, user.access, limit)]
        assert got == want, f"limit={limit}"
    last = list_page(server, user.access, limit=9)
    assert len(last["items"]) == 9 and last["next_cursor"] is None


def test_list_pages_are_stable_across_inserts(server, user):
    ids = [create_chat(server, user)["id"] for i in range(4)]
    for i, cid in enumerate(ids):
        set_activity(server, cid, 100 + i)
    want = expected_order(server, user)
    first = list_page(server, user.access, limit=2)
    # A new chat sorts first (newest activity): the next page goes on
    # after the last row shown, without repeating it.
    set_activity(server, create_chat(server, user)["id"], 0)
    rest = walk_from(server, user.access, first["next_cursor"], 2)
    assert [c["id"] for c in first["items"]] + rest == want


def walk_from(srv, token, cursor, limit):
    ids = []
    while cursor is not None:
        page = list_page(srv, token, limit=limit, cursor=cursor)
        ids.extend(c["id"] for c in page["items"])
        cursor = page["next_cursor"]
    return ids


def test_archived_filter(server, user):
    keep = create_chat(server, user)["id"]
    gone = create_chat(server, user)["id"]
    r = patch_chat(server, user, gone, {"archived": True})
    assert r.status_code == 200 and r.json()["archived"] is True
    default = [c["id"] for c in list_page(server, user.access)["items"]]
    assert default == [keep]
    explicit = [c["id"] for c in list_page(server, user.access,
                                           archived="false")["items"]]
    assert explicit == [keep]
    archived = list_page(server, user.access, archived="true")["items"]
    assert [c["id"] for c in archived] == [gone]
    assert archived[0]["archived"] is True
    assert patch_chat(server, user, gone,
                      {"archived": False}).status_code == 200
    assert {c["id"] for c in list_page(server, user.access)["items"]} == \
        {keep, gone}
    assert list_page(server, user.access, archived="true")["items"] == []


@pytest.mark.parametrize("query", [
    "archived=yes", "archived=", "archived=TRUE", "archived=1",
    "limit=0", "limit=201", "limit=ten", "limit=",
    "cursor=", "cursor=***", "cursor=" + b64url("nonsense"),
    "cursor=" + b64url("1|2030-01-01T00:00:00.000000Z"),
    "cursor=" + b64url("2|2030-01-01T00:00:00.000000Z|"
                       "01890a5d-ac96-774b-bcce-b302099a8057"),
    "cursor=" + b64url("1|2030-01-01 00:00:00|"
                       "01890a5d-ac96-774b-bcce-b302099a8057"),
    "cursor=" + b64url("1|2030-13-45T99:00:00.000000Z|"
                       "01890a5d-ac96-774b-bcce-b302099a8057"),
    "cursor=" + b64url("0|2030-01-01T00:00:00.000000Z|not-a-uuid"),
])
def test_list_bad_query(server, user, query):
    r = server.get("/chats?" + query, token=user.access)
    assert_problem(r, 400, "bad_query")


def test_list_other_users_and_deleted_chats_are_hidden(server, user, other):
    mine = create_chat(server, user)["id"]
    create_chat(server, other)
    dropped = create_chat(server, user)["id"]
    assert server.delete(f"/chats/{dropped}",
                         token=user.access).status_code == 204
    assert [c["id"] for c in walk(server, user.access, 1)] == [mine]
    assert len(list_page(server, other.access)["items"]) == 1


# ---------------------------------------------------------- get/patch/delete

def test_patch_fields(server, user):
    chat = create_chat(server, user, title="before")
    time.sleep(0.01)
    r = patch_chat(server, user, chat["id"], {
        "title": "after", "pinned": True, "archived": True,
        "model": "claude-haiku-4-5", "permission_mode": "auto",
        "ignored": {"x": 1}})
    assert r.status_code == 200, r.text
    got = r.json()
    check_chat_shape(got)
    assert got["title"] == "after" and got["pinned"] is True
    assert got["archived"] is True and got["model"] == "claude-haiku-4-5"
    assert got["permission_mode"] == "auto"
    assert got["created_at"] == chat["created_at"]
    assert got["updated_at"] > chat["updated_at"]
    assert got["last_activity_at"] == chat["last_activity_at"]
    assert get_chat(server, user, chat["id"]).json() == got
    # Absent fields stay as they are.
    r = patch_chat(server, user, chat["id"], {"pinned": False})
    assert r.status_code == 200
    assert r.json()["title"] == "after" and r.json()["archived"] is True
    assert r.json()["pinned"] is False


def test_patch_empty_body_changes_nothing(server, user):
    chat = create_chat(server, user, title="same")
    r = patch_chat(server, user, chat["id"], {})
    assert r.status_code == 200, r.text
    assert r.json() == chat


def test_patch_prompt_marks_prompt_edited(server, user):
    chat = create_chat(server, user, system_prompt_append="one")
    edited = ("SELECT prompt_edited FROM chats WHERE id = %s",
              (chat["id"],))
    # The same text again is no change.
    r = patch_chat(server, user, chat["id"], {"system_prompt_append": "one"})
    assert r.status_code == 200 and r.json()["system_prompt_append"] == "one"
    assert server.db.scalar(*edited) is False
    r = patch_chat(server, user, chat["id"], {"system_prompt_append": "two"})
    assert r.status_code == 200 and r.json()["system_prompt_append"] == "two"
    assert server.db.scalar(*edited) is True
    r = patch_chat(server, user, chat["id"], {"system_prompt_append": ""})
    assert r.json()["system_prompt_append"] == ""
    assert server.db.scalar(*edited) is True


@pytest.mark.parametrize("body,field", INVALID_FIELDS + [
    ({"pinned": "yes"}, "pinned"),
    ({"pinned": None}, "pinned"),
    ({"archived": 1}, "archived"),
    ({"title": "fine", "archived": "no"}, "archived"),
])
def test_patch_validation(server, user, body, field):
    chat = create_chat(server, user, title="orig")
    r = patch_chat(server, user, chat["id"], body)
    problem = assert_problem(r, 422, "validation_failed")
    assert field in problem["detail"], problem
    assert get_chat(server, user, chat["id"]).json() == chat


def test_delete(server, user):
    chat = create_chat(server, user)
    cid = chat["id"]
    mid = insert_message(server, cid, "user", "hi",
                         "2030-01-01T00:00:00Z")
    r = server.delete(f"/chats/{cid}", token=user.access)
    assert r.status_code == 204 and r.content == b""
    assert server.db.scalar("SELECT deleted_at IS NOT NULL FROM chats"
                            " WHERE id = %s", (cid,)) is True
    assert_problem(get_chat(server, user, cid), 404, "not_found")
    assert_problem(patch_chat(server, user, cid, {"title": "x"}), 404,
                   "not_found")
    assert_problem(server.delete(f"/chats/{cid}", token=user.access), 404,
                   "not_found")
    assert_problem(server.get(f"/chats/{cid}/messages", token=user.access),
                   404, "not_found")
    assert_problem(server.get(f"/chats/{cid}/messages/{mid}",
                              token=user.access), 404, "not_found")
    assert list_page(server, user.access)["items"] == []
    assert list_page(server, user.access, archived="true")["items"] == []


@pytest.mark.parametrize("bad", [
    "not-a-uuid", "123", "01890a5d-ac96-774b-bcce-b302099a805",
    "01890a5d-ac96-774b-bcce-b302099a8057x",
    "g1890a5d-ac96-774b-bcce-b302099a8057",
    "01890a5dac96774bbcceb302099a8057", "%27%3B--", "x" * 120,
])
def test_malformed_ids_are_404(server, user, bad):
    chat = create_chat(server, user)
    for method, path in (("GET", f"/chats/{bad}"),
                         ("PATCH", f"/chats/{bad}"),
                         ("DELETE", f"/chats/{bad}"),
                         ("GET", f"/chats/{bad}/messages"),
                         ("GET", f"/chats/{bad}/messages/{uuid.uuid4()}"),
                         ("GET", f"/chats/{chat['id']}/messages/{bad}")):
        r = server.request(method, path, token=user.access,
                           json={} if method == "PATCH" else None)
        assert_problem(r, 404, "not_found")


def test_unknown_chat_is_404(server, user):
    cid = str(uuid.uuid4())
    assert_problem(get_chat(server, user, cid), 404, "not_found")
    assert_problem(patch_chat(server, user, cid, {}), 404, "not_found")
    assert_problem(patch_chat(server, user, cid, {"title": "t"}), 404,
                   "not_found")
    assert_problem(server.delete(f"/chats/{cid}", token=user.access), 404,
                   "not_found")
    assert_problem(server.get(f"/chats/{cid}/messages", token=user.access),
                   404, "not_found")


# ---------------------------------------------------------------- isolation

def test_isolation(server, user, other):
    chat = create_chat(server, user, title="private")
    cid = chat["id"]
    mid = insert_message(server, cid, "user", "secret",
                         "2030-01-01T00:00:00Z")
    assert_problem(get_chat(server, other, cid), 404, "not_found")
    assert_problem(patch_chat(server, other, cid, {"title": "mine now"}),
                   404, "not_found")
    assert_problem(patch_chat(server, other, cid, {}), 404, "not_found")
    assert_problem(server.delete(f"/chats/{cid}", token=other.access), 404,
                   "not_found")
    assert_problem(server.get(f"/chats/{cid}/messages", token=other.access),
                   404, "not_found")
    assert_problem(server.get(f"/chats/{cid}/messages/{mid}",
                              token=other.access), 404, "not_found")
    assert list_page(server, other.access)["items"] == []
    assert list_page(server, other.access, archived="true")["items"] == []
    # Nothing of that reached the owner's chat.
    assert get_chat(server, user, cid).json() == chat
    assert server.db.scalar("SELECT deleted_at FROM chats WHERE id = %s",
                            (cid,)) is None


# ------------------------------------------------------------------- status

def test_status_follows_the_oldest_unfinished_run(server, user):
    expect = {"queued": "queued", "awaiting_permission":
              "awaiting_permission", "streaming": "running",
              "sandbox_connect": "running", "checkpoint": "running",
              "finalize": "running"}
    for phase, status in expect.items():
        cid = create_chat(server, user)["id"]
        insert_run(server, cid, "done", "2030-01-01T00:00:00Z")
        insert_run(server, cid, phase, "2030-01-01T00:00:01Z")
        insert_run(server, cid, "queued", "2030-01-01T00:00:02Z")
        assert get_chat(server, user, cid).json()["status"] == status, phase
    idle = create_chat(server, user)["id"]
    for phase in ("done", "failed", "cancelled"):
        insert_run(server, idle, phase, "2030-01-01T00:00:00Z")
    assert get_chat(server, user, idle).json()["status"] == "idle"
    listed = {c["id"]: c["status"] for c in walk(server, user.access, 200)}
    assert listed[idle] == "idle"
    assert sorted(listed.values()).count("running") == 4


# ----------------------------------------------------------------- messages

@pytest.fixture
def conversation(server, user):
    """A chat with two turns and a task message; returns (chat id, message
    ids in creation order). Two rows share a created_at, so id breaks the
    tie."""
    cid = create_chat(server, user)["id"]
    base = uuid.uuid4().hex
    ids = [f"{base[:8]}-{base[8:12]}-{base[12:16]}-{base[16:20]}-{n:012x}"
           for n in range(7)]
    t = "2030-01-01T00:00:0{}.123456Z"
    tie = t.format(3)
    u1 = insert_message(server, cid, "user", "Hello \"there\" ✓",
                        t.format(1), attachments=[],
                        model="claude-sonnet-4-5", id=ids[1])
    a1 = insert_message(
        server, cid, "assistant",
        [{"type": "thinking", "index": 0, "thinking": "hmm"},
         {"type": "text", "index": 1, "text": "Hi!"},
         {"type": "tool", "index": 2, "id": "toolu_1", "name": "Bash",
          "input": {"command": "ls"}, "parent_id": None, "result": "a\nb"}],
        t.format(2), reply_to=u1, model="claude-sonnet-4-5",
        usage=[{"model": "claude-sonnet-4-5", "input_tokens": 10,
                "output_tokens": 5, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "cost_usd": 0.25}],
        cost_usd="0.25", started_at=t.format(2), completed_at=t.format(4),
        id=ids[2])
    u2 = insert_message(server, cid, "user", "again", tie, id=ids[4])
    a2 = insert_message(server, cid, "assistant", [], tie, reply_to=u2,
                        status="failed",
                        error={"code": "cli_failed", "detail": "exit 1"},
                        id=ids[5])
    task = insert_message(server, cid, "assistant",
                          [{"type": "text", "index": 0, "text": "done"}],
                          t.format(5), origin="task", status="completed",
                          id=ids[6])
    return cid, [u1, a1, u2, a2, task]


def test_message_list_orders(server, user, conversation):
    cid, ids = conversation
    items = list_page(server, user.access, f"/chats/{cid}/messages")["items"]
    assert [m["id"] for m in items] == ids
    asc = list_page(server, user.access, f"/chats/{cid}/messages",
                    order="asc")["items"]
    assert asc == items
    desc = list_page(server, user.access, f"/chats/{cid}/messages",
                     order="desc")["items"]
    assert [m["id"] for m in desc] == ids[::-1]
    for m in items:
        assert set(m) == MESSAGE_KEYS, m
        assert m["chat_id"] == cid


def test_message_list_pagination(server, user, conversation):
    cid, ids = conversation
    path = f"/chats/{cid}/messages"
    for limit in (1, 2, 3):
        got = [m["id"] for m in walk(server, user.access, limit, path)]
        assert got == ids, f"asc limit={limit}"
        got = [m["id"] for m in walk(server, user.access, limit, path,
                                     order="desc")]
        assert got == ids[::-1], f"desc limit={limit}"
    whole = list_page(server, user.access, path, limit=5)
    assert len(whole["items"]) == 5 and whole["next_cursor"] is None


def test_message_fields(server, user, conversation):
    cid, (u1, a1, u2, a2, task) = conversation
    def get(mid):
        r = server.get(f"/chats/{cid}/messages/{mid}", token=user.access)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == MESSAGE_KEYS, body
        return body

    m = get(u1)
    assert m["role"] == "user" and m["origin"] == "user"
    assert m["content"] == "Hello \"there\" ✓"
    assert m["attachments"] == [] and m["usage"] == []
    assert m["reply_to"] is None and m["error"] is None
    assert m["cost_usd"] == 0 and isinstance(m["cost_usd"], (int, float))
    assert m["created_at"] == "2030-01-01T00:00:01.123Z"
    assert RFC3339_RE.match(m["created_at"])
    assert m["started_at"] is None and m["completed_at"] is None
    assert m["status"] == "completed"

    m = get(a1)
    assert m["role"] == "assistant" and m["reply_to"] == u1
    assert [b["type"] for b in m["content"]] == ["thinking", "text", "tool"]
    assert m["content"][2]["input"] == {"command": "ls"}
    assert m["content"][2]["parent_id"] is None
    assert m["usage"][0]["output_tokens"] == 5
    assert m["cost_usd"] == 0.25
    assert m["model"] == "claude-sonnet-4-5"
    assert RFC3339_RE.match(m["started_at"])
    assert RFC3339_RE.match(m["completed_at"])

    m = get(a2)
    assert m["status"] == "failed"
    assert m["error"] == {"code": "cli_failed", "detail": "exit 1"}
    assert m["content"] == [] and m["model"] is None

    m = get(task)
    assert m["origin"] == "task" and m["reply_to"] is None

    listed = list_page(server, user.access, f"/chats/{cid}/messages")
    assert listed["items"][1] == get(a1)


def test_message_of_another_chat_is_404(server, user, conversation):
    cid, ids = conversation
    second = create_chat(server, user)["id"]
    for mid in ids:
        assert_problem(server.get(f"/chats/{second}/messages/{mid}",
                                  token=user.access), 404, "not_found")
    assert_problem(server.get(f"/chats/{cid}/messages/{uuid.uuid4()}",
                              token=user.access), 404, "not_found")
    page = list_page(server, user.access, f"/chats/{second}/messages")
    assert page == {"items": [], "next_cursor": None}


def test_messages_of_another_user_are_404(server, user, other,
                                          conversation):
    cid, ids = conversation
    assert_problem(server.get(f"/chats/{cid}/messages", token=other.access),
                   404, "not_found")
    for mid in ids:
        assert_problem(server.get(f"/chats/{cid}/messages/{mid}",
                                  token=other.access), 404, "not_found")
    # Even with a chat of their own in the path.
    own = create_chat(server, other)["id"]
    assert_problem(server.get(f"/chats/{own}/messages/{ids[0]}",
                              token=other.access), 404, "not_found")


@pytest.mark.parametrize("query", [
    "order=up", "order=", "order=ASC", "limit=0", "limit=500",
    "cursor=%%%", "cursor=" + b64url("garbage"),
    "cursor=" + b64url("2030-01-01T00:00:00.000000Z"),
    "cursor=" + b64url("2030-01-01T00:00:00.000000Z|nope"),
    "cursor=" + b64url("yesterday|01890a5d-ac96-774b-bcce-b302099a8057"),
])
def test_message_list_bad_query(server, user, query):
    cid = create_chat(server, user)["id"]
    r = server.get(f"/chats/{cid}/messages?" + query, token=user.access)
    assert_problem(r, 400, "bad_query")
