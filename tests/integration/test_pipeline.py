"""The run pipeline end to end: the real Claude CLI in a bubblewrap
sandbox, talking to the scripted model through corral's gateway, streamed
over SSE. Every test runs against both event buses (memory and Redis)."""

import hashlib
import os
import threading
import time

import pytest
import requests

from conftest import (_TEST_SERVERS, assert_problem, register, require_env,
                      serve)
from pipeline_util import (SSE, Chat, finished, model, pipeline_env,
                           text_rule, types)


@pytest.fixture(scope="module", params=["memory", "redis"])
def pipe(request, cluster, logdir, model):
    env = pipeline_env(model, CORRAL_SSE_HEARTBEAT_S="1",
                       CORRAL_INTERRUPT_GRACE_MS="5000")
    if request.param == "redis":
        env["CORRAL_REDIS_URL"] = require_env("CORRAL_TEST_REDIS_URL")
    yield from serve(cluster, logdir, f"pipe-{request.param}", env)


@pytest.fixture
def user(pipe):
    _TEST_SERVERS.append(pipe)  # its log tail goes with a failure
    return register(pipe)


def test_text_reply_streams_deltas(pipe, model, user):
    model.scenario([text_rule("say hello", "Hello there, friend.",
                              chunk_size=4, usage={"input_tokens": 11,
                                                   "output_tokens": 7})])
    chat = Chat(pipe, user, title="t")
    sent = chat.send("say hello")
    assert sent["message"]["role"] == "user"
    assert sent["reply"]["status"] == "queued"
    assert sent["stream"].endswith(f"?after={sent['last_event_id']}")
    sse = chat.stream(after=sent["last_event_id"])
    evs = sse.until(finished(sent["reply"]["id"]))
    sse.close()
    seen = types(evs)
    assert seen[0] == "user_message"
    assert seen.count("assistant_text_delta") >= 3
    deltas = "".join(e["data"]["text"] for e in evs
                     if e["event"] == "assistant_text_delta")
    assert deltas == "Hello there, friend."
    final = [e for e in evs if e["event"] == "assistant_text"]
    assert final and final[-1]["data"]["text"] == "Hello there, friend."
    assert all("id" not in e for e in evs
               if e["event"] == "assistant_text_delta")
    ids = [int(e["id"]) for e in evs if "id" in e]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    usage = [e["data"] for e in evs if e["event"] == "usage"]
    assert usage and usage[0]["output_tokens"] == 7
    reply = chat.message(sent["reply"]["id"])
    assert reply["status"] == "completed"
    assert reply["content"][-1]["text"] == "Hello there, friend."
    assert reply["usage"][0]["input_tokens"] == 11
    # The upstream got the server's key, never the sandbox's placeholder.
    want = hashlib.sha256(b"sk-test-upstream-key").hexdigest()[:16]
    reqs = [r for r in model.requests() if r["path"].startswith("/v1/")]
    assert reqs
    for rec in reqs:
        assert rec["auth"]["x-api-key"]["sha256_prefix"] == want, rec["auth"]
        assert not rec["auth"].get("authorization", {}).get("present")


def test_bash_tool_writes_file(pipe, model, user):
    model.scenario([
        {"match": {"user_text_contains": "write hello.txt"},
         "reply": {"blocks": [{"type": "tool_use", "name": "Bash",
                               "input": {"command": "echo hi > hello.txt"}}]}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "Wrote it."}]}},
    ])
    chat = Chat(pipe, user, permission_mode="auto")
    sent = chat.send("write hello.txt")
    sse = chat.stream(after=sent["last_event_id"])
    evs = sse.until(finished(sent["reply"]["id"]), timeout=90)
    sse.close()
    seen = types(evs)
    assert "tool_started" in seen and "tool_completed" in seen, seen
    started = next(e for e in evs if e["event"] == "tool_started")
    assert started["data"]["tool"]["name"] == "Bash"
    assert evs[-1]["data"]["status"] == "completed"
    path = os.path.join(chat.workspace(), "hello.txt")
    with open(path) as f:
        assert f.read() == "hi\n"


def test_second_message_resumes_session(pipe, model, user):
    model.scenario([
        {"match": {"user_text_contains": "remember"},
         "reply": {"blocks": [{"type": "text", "text": "ok"}]}},
        {"match": {"user_text_contains": "recall"}, "reply": {"echo": True}},
    ])
    chat = Chat(pipe, user)
    first = chat.send("remember the word banana")
    chat.wait_reply(first["reply"]["id"])
    second = chat.send("recall it")
    reply = chat.wait_reply(second["reply"]["id"])
    assert reply["status"] == "completed", reply
    text = reply["content"][-1]["text"]
    assert "remember the word banana" in text and "recall it" in text


def test_back_to_back_messages_run_in_order(pipe, model, user):
    model.scenario([text_rule("one", "first", chunk_delay_ms=30),
                    text_rule("two", "second")])
    chat = Chat(pipe, user)
    a = chat.send("one")
    b = chat.send("two")
    ra = chat.wait_reply(a["reply"]["id"])
    rb = chat.wait_reply(b["reply"]["id"])
    assert ra["content"][-1]["text"] == "first"
    assert rb["content"][-1]["text"] == "second"
    assert ra["completed_at"] <= rb["started_at"]


def test_interrupt_long_reply(pipe, model, user):
    model.scenario([text_rule("long story", "word " * 400, chunk_size="word",
                              chunk_delay_ms=50)])
    chat = Chat(pipe, user)
    sent = chat.send("tell a long story")
    sse = chat.stream(after=sent["last_event_id"])
    sse.until(lambda e: e["event"] == "assistant_text_delta", timeout=60)
    r = pipe.post(f"/chats/{chat.id}/interrupt", json={},
                  token=user.access)
    assert r.status_code == 202, r.text
    evs = sse.until(finished(sent["reply"]["id"]), timeout=30)
    sse.close()
    assert evs[-1]["data"]["status"] == "cancelled"
    assert chat.message(sent["reply"]["id"])["status"] == "cancelled"
    # The chat still works afterwards.
    model.scenario([text_rule("again", "fine")])
    again = chat.send("again")
    assert chat.wait_reply(again["reply"]["id"])["status"] == "completed"


@pytest.mark.parametrize("status", [500, 429])
def test_model_error_fails_message(pipe, model, user, status):
    model.scenario([{"match": {"user_text_contains": "break"},
                     "reply": {"error": {"status": status}}}])
    chat = Chat(pipe, user)
    sent = chat.send("break please")
    sse = chat.stream(after=sent["last_event_id"])
    evs = sse.until(finished(sent["reply"]["id"]), timeout=60)
    sse.close()
    assert "error" in types(evs)
    assert evs[-1]["data"]["status"] == "failed"
    reply = chat.message(sent["reply"]["id"])
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "model_error"


def test_reconnect_with_last_event_id_exactly_once(pipe, model, user):
    model.scenario([text_rule("count", " ".join(str(i) for i in range(60)),
                              chunk_size="word", chunk_delay_ms=20)])
    chat = Chat(pipe, user)
    sent = chat.send("count please")
    first = chat.stream(after=sent["last_event_id"])
    got = first.until(lambda e: e["event"] == "assistant_text_delta")
    first.close()
    durable = [e for e in got if "id" in e]
    last = durable[-1]["id"] if durable else str(sent["last_event_id"])
    second = chat.stream(last_event_id=last)
    rest = second.until(finished(sent["reply"]["id"]), timeout=60)
    second.close()
    ids = [int(e["id"]) for e in durable + rest if "id" in e]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    # After the run ended, a full replay gives the same durable events.
    replay = chat.stream(after=0)
    all_evs = replay.until(finished(sent["reply"]["id"]))
    replay.close()
    replay_ids = [int(e["id"]) for e in all_evs if "id" in e]
    assert replay_ids == list(range(1, len(replay_ids) + 1))
    assert set(ids) <= set(replay_ids)
    assert all(e["event"] != "assistant_text_delta" for e in all_evs)


def test_concurrent_users_no_crosstalk(pipe, model):
    model.scenario([{"match": {"user_text_regex": "tag-"},
                     "reply": {"blocks": [{"type": "text",
                                           "text": "got {{user_text}}"}]}}])
    users = [register(pipe) for _ in range(3)]
    chats = [(u, Chat(pipe, u)) for u in users for _ in range(3)]
    sent = [(c, c.send(f"tag-{c.id}")) for _, c in chats]
    for chat, s in sent:
        reply = chat.wait_reply(s["reply"]["id"], timeout=180)
        assert reply["status"] == "completed", reply
        assert reply["content"][-1]["text"] == f"got tag-{chat.id}"


def test_other_users_chat_is_404(pipe, user):
    other = register(pipe)
    chat = Chat(pipe, user)
    t = other.access
    for method, path, body in [
        ("GET", f"/chats/{chat.id}", None),
        ("POST", f"/chats/{chat.id}/messages", {"content": "x"}),
        ("GET", f"/chats/{chat.id}/messages", None),
        ("POST", f"/chats/{chat.id}/interrupt", {}),
        ("GET", f"/chats/{chat.id}/status", None),
        ("GET", f"/chats/{chat.id}/stream", None),
        ("DELETE", f"/chats/{chat.id}", None),
    ]:
        r = pipe.request(method, f"{path}", token=t, json=body)
        assert_problem(r, 404, "not_found")


def test_sandbox_escape_attempts_fail(pipe, model, user):
    pg_port = require_env("CORRAL_TEST_PG_PORT")
    other = Chat(pipe, user, permission_mode="auto")
    os.makedirs(other.workspace(), exist_ok=True) if False else None
    probe = (f"(echo > /dev/tcp/127.0.0.1/{pg_port}) 2>/dev/null && "
             f"echo PG-REACHED || echo PG-REFUSED; "
             f"ls /proc | grep -c '^[0-9]' ; "
             f"ls {pipe.data_dir} 2>/dev/null && echo HOST-VISIBLE || "
             f"echo HOST-HIDDEN; id -u")
    model.scenario([
        {"match": {"user_text_contains": "probe"},
         "reply": {"blocks": [{"type": "tool_use", "name": "Bash",
                               "input": {"command": probe}}]}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "probed"}]}},
    ])
    chat = Chat(pipe, user, permission_mode="auto")
    sent = chat.send("probe")
    reply = chat.wait_reply(sent["reply"]["id"], timeout=90)
    tool = next(b for b in reply["content"] if b["type"] == "tool")
    out = tool["result"] if isinstance(tool["result"], str) else \
        " ".join(x.get("text", "") for x in tool["result"])
    assert "PG-REFUSED" in out and "PG-REACHED" not in out, out
    assert "HOST-HIDDEN" in out, out
    assert "1000" in out.split()[-1], out
    procs = int([w for w in out.split() if w.isdigit()][0])
    assert procs < 20, out


def test_prompt_edit_relaunches_with_resume(pipe, model, user):
    """A new system prompt is a launch setting: the warm CLI is replaced by
    one started with --resume, which still carries the earlier turns, and
    the new prompt reaches the model."""
    model.scenario([
        {"match": {"user_text_contains": "remember"},
         "reply": {"blocks": [{"type": "text", "text": "ok"}]}},
        {"match": {"user_text_contains": "recall",
                   "system_contains": "Answer like a pirate."},
         "reply": {"echo": True}},
    ])
    chat = Chat(pipe, user)
    first = chat.send("remember the word kiwi")
    assert chat.wait_reply(first["reply"]["id"])["status"] == "completed"
    r = pipe.request("PATCH", f"/chats/{chat.id}",
                     json={"system_prompt_append": "Answer like a pirate."},
                     token=user.access)
    assert r.status_code == 200, r.text
    second = chat.send("recall it")
    reply = chat.wait_reply(second["reply"]["id"])
    assert reply["status"] == "completed", reply
    text = reply["content"][-1]["text"]
    assert text.startswith("ECHO"), text
    assert "remember the word kiwi" in text and "recall it" in text
    # The second turn launched a CLI (the first one's was let go).
    replay = chat.stream(after=0)
    evs = replay.until(finished(second["reply"]["id"]))
    replay.close()
    phases = [e["data"]["phase"] for e in evs
              if e["event"] == "message_status" and
              e["data"]["message_id"] == second["reply"]["id"]]
    assert "cli_launch" in phases, phases


def test_turn_timeout_fails_with_error_event(make_server, model):
    """A turn that outlives turn_timeout_ms ends failed with code timeout,
    and the chat takes the next message."""
    srv = make_server(env=pipeline_env(model, CORRAL_TURN_TIMEOUT_MS="1500"))
    _TEST_SERVERS.append(srv)
    model.scenario([text_rule("slow", "late", first_delay_ms=6000),
                    text_rule("quick", "fine")])
    u = register(srv)
    chat = Chat(srv, u)
    sent = chat.send("slow please")
    sse = chat.stream(after=sent["last_event_id"])
    evs = sse.until(finished(sent["reply"]["id"]), timeout=30)
    sse.close()
    errors = [e["data"] for e in evs if e["event"] == "error"]
    assert errors and errors[0]["code"] == "timeout", evs
    assert chat.message(sent["reply"]["id"])["error"]["code"] == "timeout"
    again = chat.send("quick")
    assert chat.wait_reply(again["reply"]["id"])["status"] == "completed"


def test_startup_sweeps_interrupted_destroys(make_server):
    """A sandbox tree renamed aside by a destroy that never finished is
    removed when the next process starts."""
    srv = make_server(start=False, env={
        "CORRAL_SANDBOX_INIT_PATH": require_env("CORRAL_SANDBOX_INIT")})
    trash = os.path.join(srv.data_dir, "sandboxes", ".trash-left-over")
    os.makedirs(os.path.join(trash, "workspace", "deep"))
    with open(os.path.join(trash, "workspace", "deep", "f"), "w") as f:
        f.write("x")
    kept = os.path.join(srv.data_dir, "sandboxes", "not-trash")
    os.makedirs(kept)
    uid, gid = service_owner()
    for root, dirs, files in os.walk(srv.data_dir):
        for name in dirs + files:
            if uid is not None:
                os.chown(os.path.join(root, name), uid, gid)
    srv.start()
    deadline = time.time() + 10
    while os.path.exists(trash) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(trash)
    assert os.path.isdir(kept)


def service_owner():
    import pwd
    name = os.environ.get("CORRAL_TEST_SERVICE_USER") or None
    if not name:
        return (None, None)
    pw = pwd.getpwnam(name)
    return (pw.pw_uid, pw.pw_gid)


def test_idle_chat_lets_go_and_comes_back(make_server, model):
    """After cli_idle_timeout_s the CLI closes and the chat's runtime is let
    go; the next message reopens the same workspace and session, and
    deleting the chat then still removes its workspace."""
    srv = make_server(env=pipeline_env(model, CORRAL_CLI_IDLE_TIMEOUT_S="1"))
    _TEST_SERVERS.append(srv)
    model.scenario([
        {"match": {"user_text_contains": "make it"},
         "reply": {"blocks": [{"type": "tool_use", "name": "Bash",
                               "input": {"command": "echo kept > k.txt"}}]}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "made"}]}},
        {"match": {"user_text_contains": "recall"}, "reply": {"echo": True}},
    ])
    u = register(srv)
    chat = Chat(srv, u, permission_mode="auto")
    first = chat.send("make it")
    assert chat.wait_reply(first["reply"]["id"])["status"] == "completed"
    deadline = time.time() + 15
    while time.time() < deadline and not any(
            "CLI exited" in line for line in srv.log_lines()):
        time.sleep(0.2)
    assert any("CLI exited" in line for line in srv.log_lines())
    second = chat.send("recall")
    reply = chat.wait_reply(second["reply"]["id"])
    assert reply["status"] == "completed", reply
    assert "make it" in reply["content"][-1]["text"]
    with open(os.path.join(chat.workspace(), "k.txt")) as f:
        assert f.read() == "kept\n"
    deadline = time.time() + 15
    while time.time() < deadline and sum(
            "CLI exited" in line for line in srv.log_lines()) < 2:
        time.sleep(0.2)
    r = srv.delete(f"/chats/{chat.id}", token=u.access)
    assert r.status_code == 204, r.text
    deadline = time.time() + 10
    while os.path.exists(chat.workspace()) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(chat.workspace())


def test_full_queue_is_429_for_the_owner_only(make_server, model):
    """max_queued_messages bounds a chat's queue; only its owner learns
    that it is full (anyone else gets the 404 of a chat not theirs)."""
    srv = make_server(env=pipeline_env(model, CORRAL_MAX_QUEUED_MESSAGES="1"))
    _TEST_SERVERS.append(srv)
    model.scenario([text_rule("slow", "late", first_delay_ms=4000)])
    owner, other = register(srv), register(srv)
    chat = Chat(srv, owner)
    chat.send("slow one")
    chat.send("slow two")  # queued behind the first
    r = srv.post(f"/chats/{chat.id}/messages", json={"content": "three"},
                 token=owner.access)
    assert_problem(r, 429, "queue_full")
    r = srv.post(f"/chats/{chat.id}/messages", json={"content": "three"},
                 token=other.access)
    assert_problem(r, 404)
    r = srv.post(f"/chats/{chat.id}/interrupt", json={"drop_queue": True},
                 token=owner.access)
    assert r.status_code == 202, r.text
