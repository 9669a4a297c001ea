"""Tool approvals (API.md "Permissions").

Two groups:
- test_rows_*: the HTTP side alone, over request and rule rows written
  straight to the database (lists, order and paging, filters, 404s for
  foreign, deleted and malformed ids, rule deletion, validation of
  answers, 409 for a request no live run holds). They run on the shared
  server.
- test_flow_*: end to end with the real CLI in its sandbox and the
  scripted model: can_use_tool becomes a pending request and events, the
  user's answer goes back to the CLI, rules, modes, expiry, interrupt.
"""

import base64
import json
import os
import time
import uuid

import pytest

from conftest import (_TEST_SERVERS, RFC3339_RE, UUID_RE, assert_problem,
                      register, serve)
from pipeline_util import Chat, finished, model, pipeline_env, types

REQUEST_KEYS = {"id", "message_id", "tool_name", "input", "suggestions",
                "status", "decision", "reason", "by", "expires_at",
                "created_at", "decided_at"}
RULE_KEYS = {"id", "tool_name", "content", "behavior", "created_at"}
EVENT_REQUEST_KEYS = {"id", "tool_name", "input", "suggestions",
                      "expires_at"}
VALID_ANSWER = {"decision": "allow"}


# ------------------------------------------------------------------ helpers

def b64url(text):
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def perms_path(chat_id, rid=None):
    path = f"/chats/{chat_id}/permissions"
    return path if rid is None else f"{path}/{rid}"


def rules_path(chat_id, rule_id=None):
    path = f"/chats/{chat_id}/permission-rules"
    return path if rule_id is None else f"{path}/{rule_id}"


def new_chat(srv, user, **fields):
    r = srv.post("/chats", json=fields, token=user.access)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def list_body(srv, user, path, **params):
    r = srv.get(path, token=user.access, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"}, body
    return body


def walk(srv, user, path, limit, **params):
    """Every item over all pages."""
    items, cursor = [], None
    for _ in range(100):
        p = dict(params, limit=limit)
        if cursor is not None:
            p["cursor"] = cursor
        page = list_body(srv, user, path, **p)
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], "a non-final page must not be empty"
    pytest.fail("paging did not end")


def answer(srv, user, chat_id, rid, body):
    return srv.post(perms_path(chat_id, rid), json=body, token=user.access)


def assert_request_shape(item):
    assert set(item) == REQUEST_KEYS, item
    assert UUID_RE.match(item["id"]) and UUID_RE.match(item["message_id"])
    assert item["status"] in ("pending", "resolved")
    assert RFC3339_RE.match(item["created_at"]), item
    assert RFC3339_RE.match(item["expires_at"]), item
    if item["status"] == "pending":
        assert item["decision"] is None and item["reason"] is None
        assert item["by"] is None and item["decided_at"] is None
    else:
        assert item["decision"] in ("allow", "deny"), item
        assert RFC3339_RE.match(item["decided_at"]), item
        assert (item["by"] is not None) == (item["reason"] == "user"), item


# ---- rows written straight to the database

def insert_reply(srv, chat_id, status="awaiting_permission"):
    mid = str(uuid.uuid4())
    srv.db.query("INSERT INTO messages (id, chat_id, role, status, content)"
                 " VALUES (%s, %s, 'assistant', %s, '[]')",
                 (mid, chat_id, status))
    return mid


def insert_request(srv, chat_id, message_id, created_at, status="pending",
                   decision=None, reason=None, decided_by=None,
                   tool_name="Bash", tool_input=None, rid=None):
    rid = rid or str(uuid.uuid4())
    tool_input = tool_input or {"command": "echo hi > f.txt",
                                "description": "x"}
    srv.db.query(
        "INSERT INTO permission_requests (id, chat_id, message_id,"
        " tool_use_id, tool_name, input, suggestions, status, decision,"
        " reason, decided_by, expires_at, created_at, decided_at)"
        " VALUES (%s, %s, %s, 'toolu_x', %s, %s, %s, %s, %s, %s, %s,"
        " '2099-01-01T00:00:00Z', %s,"
        " CASE WHEN %s = 'resolved' THEN %s::timestamptz END)",
        (rid, chat_id, message_id, tool_name, json.dumps(tool_input),
         json.dumps([{"type": "addRules", "behavior": "allow",
                      "rules": [{"toolName": tool_name}]}]),
         status, decision, reason, decided_by, created_at, status,
         created_at))
    return rid


def insert_rule(srv, chat_id, created_at, tool_name="Bash", content=None,
                behavior="allow", rule_id=None):
    rule_id = rule_id or str(uuid.uuid4())
    srv.db.query("INSERT INTO permission_rules (id, chat_id, tool_name,"
                 " content, behavior, created_at) VALUES (%s, %s, %s, %s,"
                 " %s, %s)",
                 (rule_id, chat_id, tool_name, content, behavior,
                  created_at))
    return rule_id


def row_status(srv, rid):
    return srv.db.scalar("SELECT status FROM permission_requests"
                         " WHERE id = %s", (rid,))


@pytest.fixture
def user(server):
    return register(server)


@pytest.fixture
def other(server):
    return register(server)


@pytest.fixture
def pending(server, user):
    """A chat of user's with one pending request row: (chat_id, rid)."""
    chat_id = new_chat(server, user)
    mid = insert_reply(server, chat_id)
    rid = insert_request(server, chat_id, mid, "2030-01-01T00:00:00Z")
    return chat_id, rid


# ================================================================ rows

def test_rows_empty_lists(server, user):
    chat_id = new_chat(server, user)
    assert list_body(server, user, perms_path(chat_id)) == \
        {"items": [], "next_cursor": None}
    assert list_body(server, user, perms_path(chat_id),
                     status="pending") == {"items": [], "next_cursor": None}
    assert list_body(server, user, rules_path(chat_id)) == \
        {"items": [], "next_cursor": None}


def test_rows_list_oldest_first_and_pending_filter(server, user):
    chat_id = new_chat(server, user)
    mid = insert_reply(server, chat_id)
    late = insert_request(server, chat_id, mid, "2030-01-03T00:00:00Z",
                          tool_input={"command": "late"})
    early = insert_request(server, chat_id, mid, "2030-01-01T00:00:00Z",
                           status="resolved", decision="deny",
                           reason="user", decided_by=user.id,
                           tool_name="Write", tool_input={"file_path": "a"})
    mid_ = insert_request(server, chat_id, mid, "2030-01-02T00:00:00Z",
                          status="resolved", decision="allow", reason="auto")
    items = list_body(server, user, perms_path(chat_id))["items"]
    assert [i["id"] for i in items] == [early, mid_, late]
    for item in items:
        assert_request_shape(item)
        assert item["message_id"] == mid
    first = items[0]
    assert first["tool_name"] == "Write"
    assert first["input"] == {"file_path": "a"}
    assert first["decision"] == "deny" and first["reason"] == "user"
    assert first["by"] == user.id
    assert isinstance(first["suggestions"], list) and first["suggestions"]
    assert items[1]["reason"] == "auto" and items[1]["by"] is None
    assert items[2]["status"] == "pending"
    assert items[2]["input"] == {"command": "late"}
    assert items[2]["created_at"].startswith("2030-01-03T00:00:00")
    pend = list_body(server, user, perms_path(chat_id), status="pending")
    assert [i["id"] for i in pend["items"]] == [late]


def test_rows_paging_is_stable(server, user):
    chat_id = new_chat(server, user)
    mid = insert_reply(server, chat_id)
    ids = [insert_request(server, chat_id, mid,
                          f"2030-01-01T00:00:0{i // 2}Z")
           for i in range(7)]  # pairs share a created_at: id breaks ties
    want = [row[0] for row in server.db.query(
        "SELECT id::text FROM permission_requests WHERE chat_id = %s"
        " ORDER BY created_at, id", (chat_id,))]
    assert sorted(want) == sorted(ids)
    for limit in (1, 2, 3, 7, 50):
        got = walk(server, user, perms_path(chat_id), limit)
        assert [i["id"] for i in got] == want, limit
    first = list_body(server, user, perms_path(chat_id), limit=7)
    assert first["next_cursor"] is None
    rules = [insert_rule(server, chat_id, f"2030-01-01T00:00:0{i // 2}Z",
                         content=f"c{i}") for i in range(5)]
    want_rules = [row[0] for row in server.db.query(
        "SELECT id::text FROM permission_rules WHERE chat_id = %s"
        " ORDER BY created_at, id", (chat_id,))]
    assert sorted(want_rules) == sorted(rules)
    for limit in (1, 2, 5):
        got = walk(server, user, rules_path(chat_id), limit)
        assert [i["id"] for i in got] == want_rules, limit


def test_rows_bad_query(server, user, pending):
    chat_id, rid = pending
    for params in ({"status": "resolved"}, {"status": ""},
                   {"status": "PENDING"}, {"limit": "0"},
                   {"limit": "201"}, {"limit": "x"}, {"cursor": "!!"},
                   {"cursor": b64url("nonsense")},
                   {"cursor": b64url("2030-01-01T00:00:00.000000Z|x")},
                   {"cursor": b64url(
                       f"2030-13-01T00:00:00.000000Z|{uuid.uuid4()}")}):
        r = server.get(perms_path(chat_id), token=user.access,
                       params=params)
        assert_problem(r, 400, "bad_query")
    for params in ({"limit": "0"}, {"cursor": b64url("nonsense")},
                   {"cursor": b64url(
                       f"2030-13-01T00:00:00.000000Z|{uuid.uuid4()}")}):
        r = server.get(rules_path(chat_id), token=user.access,
                       params=params)
        assert_problem(r, 400, "bad_query")
    assert row_status(server, rid) == "pending"


def test_rows_foreign_deleted_and_malformed_chats_are_404(server, user,
                                                          other, pending):
    chat_id, rid = pending
    rule = insert_rule(server, chat_id, "2030-01-01T00:00:00Z")
    for who in (other,):
        assert_problem(server.get(perms_path(chat_id), token=who.access),
                       404, "not_found")
        assert_problem(server.get(perms_path(chat_id), token=who.access,
                                  params={"status": "pending"}), 404)
        assert_problem(answer(server, who, chat_id, rid, VALID_ANSWER), 404)
        assert_problem(answer(server, who, chat_id, rid,
                              {"decision": "deny"}), 404)
        assert_problem(server.get(rules_path(chat_id), token=who.access),
                       404, "not_found")
        assert_problem(server.delete(rules_path(chat_id, rule),
                                     token=who.access), 404, "not_found")
    # Nothing changed for the owner.
    assert row_status(server, rid) == "pending"
    assert [i["id"] for i in list_body(server, user,
                                       rules_path(chat_id))["items"]] == \
        [rule]
    # Unknown and malformed chat ids.
    for bad in (str(uuid.uuid4()), "not-a-uuid", "1"):
        assert_problem(server.get(perms_path(bad), token=user.access), 404)
        assert_problem(server.get(rules_path(bad), token=user.access), 404)
        assert_problem(answer(server, user, bad, rid, VALID_ANSWER), 404)
        assert_problem(server.delete(rules_path(bad, rule),
                                     token=user.access), 404)
    # A deleted chat: everything 404, the rule is left alone.
    r = server.delete(f"/chats/{chat_id}", token=user.access)
    assert r.status_code == 204, r.text
    assert_problem(server.get(perms_path(chat_id), token=user.access), 404)
    assert_problem(server.get(rules_path(chat_id), token=user.access), 404)
    assert_problem(answer(server, user, chat_id, rid, VALID_ANSWER), 404)
    assert_problem(server.delete(rules_path(chat_id, rule),
                                 token=user.access), 404)
    assert server.db.scalar("SELECT count(*) FROM permission_rules"
                            " WHERE id = %s", (rule,)) == 1


def test_rows_unauthenticated_is_401(server, pending):
    chat_id, rid = pending
    assert_problem(server.get(perms_path(chat_id)), 401)
    assert_problem(server.post(perms_path(chat_id, rid), json=VALID_ANSWER),
                   401)
    assert_problem(server.get(rules_path(chat_id)), 401)
    assert_problem(server.delete(rules_path(chat_id, str(uuid.uuid4()))),
                   401)
    assert row_status(server, rid) == "pending"


def test_rows_rules_list_and_delete(server, user, other):
    chat_id = new_chat(server, user)
    second_chat = new_chat(server, user)
    b = insert_rule(server, chat_id, "2030-01-02T00:00:00Z",
                    tool_name="Write", behavior="deny")
    a = insert_rule(server, chat_id, "2030-01-01T00:00:00Z",
                    content="echo hi:*")
    elsewhere = insert_rule(server, second_chat, "2030-01-01T00:00:00Z")
    items = list_body(server, user, rules_path(chat_id))["items"]
    assert [i["id"] for i in items] == [a, b]
    for item in items:
        assert set(item) == RULE_KEYS, item
        assert RFC3339_RE.match(item["created_at"])
    assert items[0] == {"id": a, "tool_name": "Bash",
                        "content": "echo hi:*", "behavior": "allow",
                        "created_at": items[0]["created_at"]}
    assert items[1]["content"] is None and items[1]["behavior"] == "deny"
    assert items[1]["tool_name"] == "Write"
    # Another chat's rule through this chat's path, a malformed id, an
    # unknown one: 404, nothing deleted.
    for rule_id in (elsewhere, "not-a-uuid", str(uuid.uuid4())):
        assert_problem(server.delete(rules_path(chat_id, rule_id),
                                     token=user.access), 404, "not_found")
    assert server.db.scalar("SELECT count(*) FROM permission_rules"
                            " WHERE chat_id IN (%s, %s)",
                            (chat_id, second_chat)) == 3
    r = server.delete(rules_path(chat_id, a), token=user.access)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert [i["id"] for i in list_body(server, user,
                                       rules_path(chat_id))["items"]] == [b]
    assert_problem(server.delete(rules_path(chat_id, a), token=user.access),
                   404, "not_found")
    assert [i["id"] for i in list_body(server, user,
                                       rules_path(second_chat))["items"]] \
        == [elsewhere]


BAD_ANSWERS = [
    ({}, "decision"),
    ({"decision": None}, "decision"),
    ({"decision": "maybe"}, "decision"),
    ({"decision": "ALLOW"}, "decision"),
    ({"decision": ""}, "decision"),
    ({"decision": 1}, "decision"),
    ({"decision": ["allow"]}, "decision"),
    ({"decision": "allow\u0000"}, "decision"),
    ({"decision": "allow", "remember": "yes"}, "remember"),
    ({"decision": "allow", "remember": 1}, "remember"),
    ({"decision": "allow", "updated_input": "echo hi"}, "updated_input"),
    ({"decision": "allow", "updated_input": ["echo"]}, "updated_input"),
    ({"decision": "allow", "updated_input": 3}, "updated_input"),
    ({"decision": "allow", "answers": "yes"}, "answers"),
    ({"decision": "allow", "answers": [1]}, "answers"),
    ({"decision": "deny", "message": 5}, "message"),
    ({"decision": "deny", "message": {"text": "no"}}, "message"),
    ({"decision": "deny", "message": "x" * 4097}, "message"),
    ({"decision": "deny", "message": "\u00e9" * 2049}, "message"),  # bytes
    ({"decision": "deny", "message": "a\u0000b"}, "message"),
    ({"decision": "deny", "updated_input": {"command": "ls"}},
     "updated_input"),
    ({"decision": "deny", "answers": {"q": "a"}}, "answers"),
    ({"decision": "allow", "message": "sure"}, "message"),
]


@pytest.mark.parametrize("body,field", BAD_ANSWERS)
def test_rows_answer_validation(server, user, pending, body, field):
    chat_id, rid = pending
    p = assert_problem(answer(server, user, chat_id, rid, body), 422,
                       "validation_failed")
    assert field in p["detail"], p
    assert row_status(server, rid) == "pending"


def test_rows_answer_malformed_body(server, user, pending):
    chat_id, rid = pending
    path = perms_path(chat_id, rid)
    assert_problem(server.request("POST", path, token=user.access,
                                  data="{", headers={"Content-Type":
                                                     "application/json"}),
                   400)
    assert_problem(server.request("POST", path, token=user.access,
                                  data="[]", headers={"Content-Type":
                                                      "application/json"}),
                   400)
    r = server.request("POST", path, token=user.access,
                       data='{"decision":"allow"}',
                       headers={"Content-Type": "text/plain"})
    assert_problem(r, 415)
    assert row_status(server, rid) == "pending"


def test_rows_answer_unknown_and_malformed_request_ids(server, user,
                                                       pending):
    chat_id, rid = pending
    other_chat = new_chat(server, user)
    other_mid = insert_reply(server, other_chat)
    elsewhere = insert_request(server, other_chat, other_mid,
                               "2030-01-01T00:00:00Z")
    for bad in (str(uuid.uuid4()), "not-a-uuid", rid.upper() + "0",
                elsewhere):
        assert_problem(answer(server, user, chat_id, bad, VALID_ANSWER),
                       404, "not_found")
    assert row_status(server, rid) == "pending"
    assert row_status(server, elsewhere) == "pending"


def test_rows_answer_decided_request_is_409(server, user):
    chat_id = new_chat(server, user)
    mid = insert_reply(server, chat_id)
    for reason, decision in (("user", "allow"), ("timeout", "deny"),
                             ("interrupt", "deny"),
                             ("cli_cancelled", "deny"), ("rule", "allow")):
        rid = insert_request(server, chat_id, mid, "2030-01-01T00:00:00Z",
                             status="resolved", decision=decision,
                             reason=reason)
        for body in (VALID_ANSWER, {"decision": "deny", "message": "no"}):
            assert_problem(answer(server, user, chat_id, rid, body), 409,
                           "permission_not_pending")
        assert server.db.scalar("SELECT decision FROM permission_requests"
                                " WHERE id = %s", (rid,)) == decision


def test_rows_answer_request_no_run_holds_is_409(server, user, pending):
    """A pending row that no live run holds (its run is gone) cannot be
    answered: 409, and the row is not touched by the API."""
    chat_id, rid = pending
    for body in (VALID_ANSWER,
                 {"decision": "allow", "remember": True,
                  "updated_input": {"command": "ls"}, "answers": {}},
                 {"decision": "deny", "message": "\u00e9" * 2048}):
        assert_problem(answer(server, user, chat_id, rid, body), 409,
                       "permission_not_pending")
    assert row_status(server, rid) == "pending"
    assert list_body(server, user, rules_path(chat_id))["items"] == []


# ================================================================ flow

FLOW_ENV = {
    "CORRAL_SSE_HEARTBEAT_S": "1",
    "CORRAL_INTERRUPT_GRACE_MS": "5000",
}


@pytest.fixture(scope="module")
def pipe(cluster, logdir, model):
    yield from serve(cluster, logdir, "perm", pipeline_env(model, **FLOW_ENV))


@pytest.fixture(scope="module")
def pipe_expiring(cluster, logdir, model):
    """Requests expire after 2 s."""
    yield from serve(cluster, logdir, "perm-expiry", pipeline_env(
        model, CORRAL_PERMISSION_TIMEOUT_S="2", **FLOW_ENV))


@pytest.fixture
def owner(pipe):
    _TEST_SERVERS.append(pipe)  # its log tail goes with a failure
    return register(pipe)


def bash_rule(trigger, command):
    return {"match": {"user_text_contains": trigger},
            "reply": {"blocks": [{"type": "tool_use", "name": "Bash",
                                  "input": {"command": command,
                                            "description": "x"}}]}}


DONE_RULE = {"match": {"tool_result": True},
             "reply": {"blocks": [{"type": "text", "text": "done"}]}}


def is_event(name, **data):
    def pred(ev):
        d = ev.get("data") or {}
        return ev.get("event") == name and all(d.get(k) == v
                                               for k, v in data.items())
    return pred


class Turn:
    """One message whose Bash call waits for approval: the reply id, its
    stream, the events so far and the permission_request's request."""

    def __init__(self, chat, text, wait_request=True):
        self.chat = chat
        self.sent = chat.send(text)
        self.reply_id = self.sent["reply"]["id"]
        self.sse = chat.stream(after=self.sent["last_event_id"])
        self.events = []
        self.request = None
        if wait_request:
            self.events += self.sse.until(
                is_event("permission_request", message_id=self.reply_id),
                timeout=90)
            self.request = self.events[-1]["data"]["request"]

    def finish(self, timeout=90):
        self.events += self.sse.until(finished(self.reply_id),
                                      timeout=timeout)
        self.sse.close()
        return self.events[-1]["data"]["status"]

    def resolved(self):
        return [e["data"] for e in self.events
                if e["event"] == "permission_resolved"]


def wait_status(chat, mid, status, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = chat.message(mid)["status"]
        if got == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"message {mid} is {got}, not {status}")


def perms(chat, pending=False):
    params = {"status": "pending"} if pending else {}
    return list_body(chat.srv, chat.user, perms_path(chat.id),
                     **params)["items"]


def rules(chat):
    return list_body(chat.srv, chat.user, rules_path(chat.id))["items"]


def post_answer(chat, rid, body, user=None):
    return answer(chat.srv, user or chat.user, chat.id, rid, body)


def workspace_file(chat, name):
    return os.path.join(chat.workspace(), name)


def read_file(chat, name):
    with open(workspace_file(chat, name)) as f:
        return f.read()


def tool_results(model):
    """(is_error, text) of every tool_result block the model was sent."""
    found = []
    for rec in model.requests():
        for msg in (rec.get("body") or {}).get("messages", []):
            content = msg.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if block.get("type") != "tool_result":
                    continue
                text = block.get("content")
                if isinstance(text, list):
                    text = "".join(b.get("text", "") for b in text)
                found.append((bool(block.get("is_error")), text or ""))
    return found


def test_flow_allow_runs_the_tool(pipe, model, owner):
    model.scenario([bash_rule("make approved", "echo hi > approved.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make approved please")
    ev = turn.events[-1]
    assert "id" in ev, "permission_request must be durable"
    assert ev["data"]["message_id"] == turn.reply_id
    req = turn.request
    assert set(req) == EVENT_REQUEST_KEYS, req
    assert UUID_RE.match(req["id"])
    assert req["tool_name"] == "Bash"
    assert req["input"]["command"] == "echo hi > approved.txt"
    assert isinstance(req["suggestions"], list)
    assert RFC3339_RE.match(req["expires_at"])
    wait_status(chat, turn.reply_id, "awaiting_permission")
    st = pipe.get(f"/chats/{chat.id}/status", token=owner.access).json()
    assert st["status"] == "awaiting_permission", st
    assert st["run"]["phase"] == "awaiting_permission", st
    assert st["run"]["message_id"] == turn.reply_id
    pend = perms(chat, pending=True)
    assert len(pend) == 1, pend
    assert_request_shape(pend[0])
    assert pend[0]["id"] == req["id"] and pend[0]["status"] == "pending"
    assert pend[0]["message_id"] == turn.reply_id
    assert pend[0]["tool_name"] == "Bash" and pend[0]["input"] == \
        req["input"]
    assert not os.path.exists(workspace_file(chat, "approved.txt"))

    r = post_answer(chat, req["id"], {"decision": "allow"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_request_shape(body)
    assert body["id"] == req["id"] and body["status"] == "resolved"
    assert (body["decision"], body["reason"], body["by"]) == \
        ("allow", "user", owner.id)
    assert turn.finish() == "completed"
    res = turn.resolved()
    assert res == [{"message_id": turn.reply_id, "request_id": req["id"],
                    "decision": "allow", "reason": "user", "by": owner.id}]
    assert "tool_completed" in types(turn.events)
    assert read_file(chat, "approved.txt") == "hi\n"
    assert perms(chat, pending=True) == []
    assert [(i["id"], i["decision"]) for i in perms(chat)] == \
        [(req["id"], "allow")]
    assert chat.message(turn.reply_id)["status"] == "completed"


def test_flow_deny_with_message_reaches_the_model(pipe, model, owner):
    model.scenario([bash_rule("make denied", "echo hi > denied.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make denied please")
    r = post_answer(chat, turn.request["id"],
                    {"decision": "deny", "message": "not today"})
    assert r.status_code == 200, r.text
    assert (r.json()["decision"], r.json()["reason"]) == ("deny", "user")
    assert turn.finish() == "completed"
    assert turn.resolved()[0]["decision"] == "deny"
    assert not os.path.exists(workspace_file(chat, "denied.txt"))
    errors = [text for is_error, text in tool_results(model) if is_error]
    assert any("not today" in t for t in errors), tool_results(model)


def test_flow_allow_with_updated_input(pipe, model, owner):
    model.scenario([bash_rule("make edited", "echo hi > approved.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make edited please")
    r = post_answer(chat, turn.request["id"], {
        "decision": "allow",
        "updated_input": {"command": "echo edited > edited.txt",
                          "description": "x"}})
    assert r.status_code == 200, r.text
    assert turn.finish() == "completed"
    assert read_file(chat, "edited.txt") == "edited\n"
    assert not os.path.exists(workspace_file(chat, "approved.txt"))


def test_flow_request_expires(pipe_expiring, model):
    _TEST_SERVERS.append(pipe_expiring)
    user = register(pipe_expiring)
    model.scenario([bash_rule("make expiring", "echo hi > expired.txt"),
                    DONE_RULE])
    chat = Chat(pipe_expiring, user, permission_mode="ask")
    turn = Turn(chat, "make expiring please")
    rid = turn.request["id"]
    turn.events += turn.sse.until(is_event("permission_resolved",
                                           request_id=rid), timeout=30)
    assert turn.events[-1]["data"] == {
        "message_id": turn.reply_id, "request_id": rid, "decision": "deny",
        "reason": "timeout", "by": None}
    assert turn.finish() == "completed"
    [item] = perms(chat)
    assert (item["id"], item["status"], item["decision"], item["reason"],
            item["by"]) == (rid, "resolved", "deny", "timeout", None)
    assert_problem(post_answer(chat, rid, {"decision": "allow"}), 409,
                   "permission_not_pending")
    assert not os.path.exists(workspace_file(chat, "expired.txt"))


def test_flow_second_answer_is_409(pipe, model, owner):
    model.scenario([bash_rule("make twice", "echo hi > twice.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make twice please")
    rid = turn.request["id"]
    r = post_answer(chat, rid, {"decision": "allow"})
    assert r.status_code == 200, r.text
    for body in ({"decision": "allow"}, {"decision": "deny"}):
        assert_problem(post_answer(chat, rid, body), 409,
                       "permission_not_pending")
    assert turn.finish() == "completed"
    assert_problem(post_answer(chat, rid, {"decision": "deny"}), 409,
                   "permission_not_pending")
    [item] = perms(chat)
    assert item["decision"] == "allow" and item["by"] == owner.id
    assert len(turn.resolved()) == 1


def test_flow_remember_stores_a_rule(pipe, model, owner):
    model.scenario([bash_rule("make remembered",
                              "echo hi > remembered.txt"), DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    path = workspace_file(chat, "remembered.txt")
    # Turn 1: the user allows and remembers.
    turn = Turn(chat, "make remembered please")
    r = post_answer(chat, turn.request["id"],
                    {"decision": "allow", "remember": True})
    assert r.status_code == 200, r.text
    assert turn.finish() == "completed"
    assert os.path.exists(path)
    [rule] = rules(chat)
    assert set(rule) == RULE_KEYS
    assert (rule["tool_name"], rule["behavior"]) == ("Bash", "allow")
    os.remove(path)
    # Turn 2: the rule answers; the run never waits for the user.
    turn2 = Turn(chat, "make remembered again", wait_request=False)
    assert turn2.finish() == "completed"
    assert os.path.exists(path)
    assert "permission_request" not in types(turn2.events)
    assert not [e for e in turn2.events if e["event"] == "message_status"
                and e["data"]["status"] == "awaiting_permission"]
    res = turn2.resolved()
    assert len(res) == 1, turn2.events
    assert (res[0]["decision"], res[0]["reason"], res[0]["by"]) == \
        ("allow", "rule", None)
    second = [i for i in perms(chat) if i["message_id"] == turn2.reply_id]
    assert len(second) == 1
    assert (second[0]["decision"], second[0]["reason"]) == ("allow", "rule")
    # Turn 3: the rule is deleted, so the user is asked again.
    r = pipe.delete(rules_path(chat.id, rule["id"]), token=owner.access)
    assert r.status_code == 204, r.text
    assert rules(chat) == []
    os.remove(path)
    turn3 = Turn(chat, "make remembered a third time")
    assert turn3.request["tool_name"] == "Bash"
    r = post_answer(chat, turn3.request["id"], {"decision": "deny"})
    assert r.status_code == 200, r.text
    assert turn3.finish() == "completed"
    assert not os.path.exists(path)


def test_flow_auto_mode_allows_and_audits(pipe, model, owner):
    model.scenario([bash_rule("make auto", "echo hi > auto.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="auto")
    turn = Turn(chat, "make auto please", wait_request=False)
    assert turn.finish() == "completed"
    assert "permission_request" not in types(turn.events)
    assert not [e for e in turn.events if e["event"] == "message_status"
                and e["data"]["status"] == "awaiting_permission"]
    assert read_file(chat, "auto.txt") == "hi\n"
    [item] = perms(chat)
    assert_request_shape(item)
    assert (item["status"], item["decision"], item["reason"], item["by"]) \
        == ("resolved", "allow", "auto", None)
    assert item["tool_name"] == "Bash"
    assert item["message_id"] == turn.reply_id


def test_flow_plan_mode_asks_like_ask(pipe, model, owner):
    model.scenario([bash_rule("make planned", "echo hi > planned.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="plan")
    turn = Turn(chat, "make planned please")
    assert turn.request["tool_name"] == "Bash"
    wait_status(chat, turn.reply_id, "awaiting_permission")
    r = post_answer(chat, turn.request["id"], {"decision": "deny"})
    assert r.status_code == 200, r.text
    assert turn.finish() == "completed"
    assert not os.path.exists(workspace_file(chat, "planned.txt"))


def test_flow_interrupt_while_pending(pipe, model, owner):
    model.scenario([bash_rule("make interrupted",
                              "echo hi > interrupted.txt"), DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make interrupted please")
    rid = turn.request["id"]
    r = pipe.post(f"/chats/{chat.id}/interrupt", json={},
                  token=owner.access)
    assert r.status_code == 202, r.text
    assert turn.finish(timeout=30) == "cancelled"
    assert turn.resolved() == [{"message_id": turn.reply_id,
                                "request_id": rid, "decision": "deny",
                                "reason": "interrupt", "by": None}]
    [item] = perms(chat)
    assert (item["status"], item["decision"], item["reason"]) == \
        ("resolved", "deny", "interrupt")
    assert chat.message(turn.reply_id)["status"] == "cancelled"
    assert_problem(post_answer(chat, rid, {"decision": "allow"}), 409,
                   "permission_not_pending")
    assert not os.path.exists(workspace_file(chat, "interrupted.txt"))


def test_flow_reconnect_replays_the_request(pipe, model, owner):
    model.scenario([bash_rule("make replayed", "echo hi > replayed.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make replayed please")
    live = turn.events[-1]
    again = chat.stream(after=0)
    got = again.until(is_event("permission_request",
                               message_id=turn.reply_id), timeout=30)
    again.close()
    assert got[-1]["id"] == live["id"]
    assert got[-1]["data"] == live["data"]
    r = post_answer(chat, turn.request["id"], {"decision": "deny"})
    assert r.status_code == 200, r.text
    assert turn.finish() == "completed"


def test_flow_another_user_gets_404(pipe, model, owner):
    model.scenario([bash_rule("make private", "echo hi > private.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    stranger = register(pipe)
    turn = Turn(chat, "make private please")
    rid = turn.request["id"]
    assert_problem(pipe.get(perms_path(chat.id), token=stranger.access),
                   404, "not_found")
    assert_problem(pipe.get(perms_path(chat.id), token=stranger.access,
                            params={"status": "pending"}), 404)
    for body in ({"decision": "allow"}, {"decision": "deny"}):
        assert_problem(post_answer(chat, rid, body, user=stranger), 404,
                       "not_found")
    assert_problem(pipe.get(rules_path(chat.id), token=stranger.access),
                   404, "not_found")
    assert_problem(pipe.delete(rules_path(chat.id, str(uuid.uuid4())),
                               token=stranger.access), 404, "not_found")
    assert [i["status"] for i in perms(chat, pending=True)] == ["pending"]
    r = post_answer(chat, rid, {"decision": "allow"})
    assert r.status_code == 200, r.text
    assert turn.finish() == "completed"
    assert read_file(chat, "private.txt") == "hi\n"


def test_flow_bad_answers_leave_the_request_pending(pipe, model, owner):
    model.scenario([bash_rule("make careful", "echo hi > careful.txt"),
                    DONE_RULE])
    chat = Chat(pipe, owner, permission_mode="ask")
    turn = Turn(chat, "make careful please")
    rid = turn.request["id"]
    for body, field in (
            ({}, "decision"),
            ({"decision": "maybe"}, "decision"),
            ({"decision": "allow", "remember": "yes"}, "remember"),
            ({"decision": "allow", "updated_input": "rm -rf /"},
             "updated_input"),
            ({"decision": "deny", "message": "x" * 4097}, "message")):
        p = assert_problem(post_answer(chat, rid, body), 422,
                           "validation_failed")
        assert field in p["detail"], p
    for bad in (str(uuid.uuid4()), "not-a-uuid"):
        assert_problem(post_answer(chat, bad, {"decision": "allow"}), 404,
                       "not_found")
    assert_problem(answer(pipe, owner, "not-a-uuid", rid,
                          {"decision": "allow"}), 404, "not_found")
    [item] = perms(chat, pending=True)
    assert item["id"] == rid and item["status"] == "pending"
    assert rules(chat) == []
    assert chat.message(turn.reply_id)["status"] == "awaiting_permission"
    assert not os.path.exists(workspace_file(chat, "careful.txt"))
    r = post_answer(chat, rid, {"decision": "allow"})
    assert r.status_code == 200, r.text
    assert turn.finish() == "completed"
    assert read_file(chat, "careful.txt") == "hi\n"
