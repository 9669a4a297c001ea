"""Sandbox lifecycle and the workspace quota (issue 5): states in GET
/chats/{id} and /metrics, the idle stop and transparent restart with the
CLI session resumed, clean-up after a crash, deletion, the soft quota and
RLIMIT_FSIZE inside the sandbox."""

import os
import re
import signal
import time

import pytest
import requests

from conftest import _TEST_SERVERS, assert_problem, register
from pipeline_util import Chat, finished, model, pipeline_env, text_rule


def lifecycle_server(make_server, model, **env):
    srv = make_server(env=pipeline_env(
        model, **{k: str(v) for k, v in env.items()}))
    _TEST_SERVERS.append(srv)
    return srv


def sandbox_state(srv, user, chat):
    r = srv.get(f"/chats/{chat.id}", token=user.access)
    assert r.status_code == 200, r.text
    sb = r.json()["sandbox"]
    assert sb["provider"] == "local"
    return sb["state"]


def wait_state(srv, user, chat, want, timeout=20):
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = sandbox_state(srv, user, chat)
        if state == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"sandbox state {state}, wanted {want}")


def chat_processes(chat_id):
    """(pid, command line) of host processes whose command line names the
    chat (bwrap binds its sandbox's directories)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if chat_id.encode() in cmd:
                pids.append((int(pid), cmd[:300]))
        except OSError:
            pass
    return pids


def chat_leftovers(srv, chat):
    """What is still on the host of a chat: its sandbox tree and its
    checkpoint store (either of them renamed aside for removal: the
    helper that removes it runs until the name is gone), its processes."""
    left = []
    for sub in ("checkpoints", "sandboxes"):
        top = os.path.join(srv.data_dir, sub)
        names = os.listdir(top) if os.path.isdir(top) else []
        left += [n for n in names if chat.id in n]
    return left + chat_processes(chat.id)


def sandbox_gauges(srv):
    text = requests.get(srv.url("/metrics"), timeout=10).text
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^corral_sandboxes\{state="(\w+)"\} (\d+)$', text, re.M)}


def wait_gauge(srv, state, want, timeout=20):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = sandbox_gauges(srv).get(state)
        if got == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"corral_sandboxes{{state={state}}} = {got}, "
                         f"wanted {want}")


def test_idle_stop_and_transparent_restart(make_server, model):
    """none before the first turn, running after it; after
    sandbox_idle_timeout_s stopped with no process of the chat left and
    the gauges moved; the next message restarts it and the CLI session
    is resumed (the scripted model sees the earlier turn)."""
    srv = lifecycle_server(make_server, model,
                           CORRAL_SANDBOX_IDLE_TIMEOUT_S=2,
                           CORRAL_CLI_IDLE_TIMEOUT_S=1)
    model.scenario([
        text_rule("remember", "ok"),
        {"match": {"user_text_contains": "recall"}, "reply": {"echo": True}},
    ])
    u = register(srv)
    chat = Chat(srv, u)
    assert sandbox_state(srv, u, chat) == "none"
    assert sandbox_gauges(srv) == {"starting": 0, "running": 0,
                                   "stopped": 0, "error": 0}
    first = chat.send("remember the word kumquat")
    sse = chat.stream(after=first["last_event_id"])
    sse.until(lambda e: e["event"] == "message_status" and
              e["data"]["phase"] == "streaming", timeout=60)
    assert sandbox_state(srv, u, chat) == "running"
    sse.until(finished(first["reply"]["id"]), timeout=90)
    sse.close()
    wait_gauge(srv, "running", 1)
    assert chat_processes(chat.id), "the CLI runs in the sandbox"
    wait_state(srv, u, chat, "stopped")
    deadline = time.time() + 10
    while chat_processes(chat.id) and time.time() < deadline:
        time.sleep(0.1)
    assert not chat_processes(chat.id)
    wait_gauge(srv, "stopped", 1)
    assert sandbox_gauges(srv)["running"] == 0
    sock = os.path.join(srv.data_dir, "sandboxes", chat.id, "run", "gw.sock")
    assert not os.path.exists(sock)
    assert any("stopping it" in line for line in srv.log_lines())

    second = chat.send("recall it")
    reply = chat.wait_reply(second["reply"]["id"])
    assert reply["status"] == "completed", reply
    text = reply["content"][-1]["text"]
    assert "remember the word kumquat" in text and "recall it" in text
    assert sandbox_state(srv, u, chat) == "running"
    wait_gauge(srv, "running", 1)
    assert sandbox_gauges(srv)["stopped"] == 0


def test_delete_removes_workspace_and_state(make_server, model):
    srv = lifecycle_server(make_server, model)
    model.scenario([{"match": {"user_text_contains": "write"},
                     "reply": {"blocks": [{"type": "tool_use",
                                           "name": "Bash", "input": {
                                               "command": "echo x > f"}}]}},
                    {"match": {"tool_result": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    u = register(srv)
    other = register(srv)
    chat = Chat(srv, u, permission_mode="auto")
    sent = chat.send("write it")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert os.path.exists(os.path.join(chat.workspace(), "f"))
    wait_gauge(srv, "running", 1)
    r = srv.get(f"/chats/{chat.id}", token=other.access)
    assert_problem(r, 404)
    r = srv.delete(f"/chats/{chat.id}", token=u.access)
    assert r.status_code == 204, r.text
    # The sandbox is killed and its tree removed, and the checkpoint store
    # is renamed aside and dropped by a helper started after the answer:
    # wait until none of them is left, not merely until none is seen once.
    deadline = time.time() + 15
    while chat_leftovers(srv, chat) and time.time() < deadline:
        time.sleep(0.1)
    assert not chat_leftovers(srv, chat)
    wait_gauge(srv, "running", 0)


def test_delete_during_the_first_start_leaves_nothing(make_server, model):
    """A delete that lands while a new chat's sandbox is starting (its
    folders, gateway socket and bwrap on the way) leaves no tree and no
    process behind."""
    srv = lifecycle_server(make_server, model)
    model.scenario([text_rule("hello", "hi")])
    u = register(srv)
    chats = [Chat(srv, u) for _ in range(6)]
    for chat in chats:
        chat.send("hello")
        r = srv.delete(f"/chats/{chat.id}", token=u.access)
        assert r.status_code == 204, r.text
    deadline = time.time() + 15
    while time.time() < deadline and any(chat_leftovers(srv, c)
                                         for c in chats):
        time.sleep(0.1)
    assert not [x for c in chats for x in chat_leftovers(srv, c)]
    assert requests.get(srv.url("/healthz"), timeout=10).status_code == 200


def test_start_gate_runs_every_chat(make_server, model):
    """sandbox_starts_max 1: three chats sent to at once start their
    sandboxes one after another and every reply completes; the gate's
    gauges are exposed and end at zero."""
    srv = lifecycle_server(make_server, model, CORRAL_SANDBOX_STARTS_MAX=1)
    model.scenario([text_rule("hello", "hi")])
    u = register(srv)
    chats = [Chat(srv, u) for _ in range(3)]
    sent = [c.send("hello") for c in chats]
    for chat, s in zip(chats, sent):
        assert chat.wait_reply(s["reply"]["id"])["status"] == "completed"
    text = requests.get(srv.url("/metrics"), timeout=10).text
    for state in ("starting", "waiting"):
        assert f'corral_sandbox_starts{{state="{state}"}} 0' in text


def test_crash_leaves_no_sandbox_behind(make_server, model):
    """corrald killed with a sandbox running: its processes go with it,
    and the next start records the sandbox stopped."""
    srv = lifecycle_server(make_server, model)
    model.scenario([text_rule("hello", "hi")])
    u = register(srv)
    chat = Chat(srv, u)
    sent = chat.send("hello")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    wait_gauge(srv, "running", 1)
    assert chat_processes(chat.id)
    srv.send_signal(signal.SIGKILL)
    srv.wait(10)
    deadline = time.time() + 10
    while chat_processes(chat.id) and time.time() < deadline:
        time.sleep(0.1)
    assert not chat_processes(chat.id)
    srv.start()
    assert sandbox_state(srv, u, chat) == "stopped"
    assert sandbox_gauges(srv)["stopped"] == 1
    assert sandbox_gauges(srv)["running"] == 0
    again = chat.send("hello again")
    assert chat.wait_reply(again["reply"]["id"])["status"] == "completed"
    assert sandbox_state(srv, u, chat) == "running"


def big_write(name, mb, then=""):
    return {"match": {"user_text_contains": f"fill {name}"},
            "reply": {"blocks": [{"type": "tool_use", "name": "Bash",
                                  "input": {"command":
                                            f"head -c {mb * 1048576} "
                                            f"/dev/zero > {name}{then}"}}]}}


def test_quota_after_turn_507_then_run_fails(make_server, model):
    """A turn that writes past the quota completes (the quota is soft),
    then the next POST gets 507 while the measurement is fresh; once it
    is older than quota_check_interval_s the message is taken and its
    run fails quota_exceeded before the model is asked."""
    srv = lifecycle_server(make_server, model, CORRAL_WORKSPACE_QUOTA_MB=1,
                           CORRAL_QUOTA_CHECK_INTERVAL_S=3)
    model.scenario([
        big_write("big", 2),
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "filled"}]}},
        text_rule("more", "never"),
    ])
    u = register(srv)
    other = register(srv)
    chat = Chat(srv, u, permission_mode="auto")
    sent = chat.send("fill big")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert os.path.getsize(os.path.join(chat.workspace(), "big")) == 2 << 20
    time.sleep(0.5)  # the measurement after the turn
    r = srv.post(f"/chats/{chat.id}/messages", json={"content": "more"},
                 token=u.access)
    assert_problem(r, 507, "quota_exceeded")
    r = srv.post(f"/chats/{chat.id}/messages", json={"content": "more"},
                 token=other.access)
    assert_problem(r, 404)
    msgs = srv.get(f"/chats/{chat.id}/messages", token=u.access).json()
    assert len(msgs["items"]) == 2  # nothing stored by the 507
    time.sleep(3.2)
    seen = len(model.requests())
    late = chat.send("more please")
    reply = chat.wait_reply(late["reply"]["id"])
    assert reply["status"] == "failed", reply
    assert reply["error"]["code"] == "quota_exceeded", reply
    assert "1 MB quota" in reply["error"]["detail"]
    assert not [q for q in model.requests()[seen:]
                if "more please" in str(q.get("last_user_text", ""))]


def test_put_over_quota_is_507(make_server, model):
    """A PUT measures the workspace first: over the quota it is refused
    and the file is not written."""
    srv = lifecycle_server(make_server, model, CORRAL_WORKSPACE_QUOTA_MB=1)
    u = register(srv)
    chat = Chat(srv, u)
    url = f"/chats/{chat.id}/files/content"
    r = srv.request("PUT", url, params={"path": "big.bin"},
                    data=b"x" * (2 << 20), token=u.access)
    assert r.status_code == 204, r.text  # measured empty before it
    r = srv.request("PUT", url, params={"path": "small.txt"}, data=b"hi",
                    token=u.access)
    assert_problem(r, 507, "quota_exceeded")
    assert not os.path.exists(os.path.join(chat.workspace(), "small.txt"))
    assert os.path.getsize(os.path.join(chat.workspace(), "big.bin")) == \
        2 << 20


def test_quota_during_turn_stops_the_run(make_server, model):
    """The periodic check finds the workspace over its quota while a tool
    still runs: the CLI is interrupted and the run ends failed with
    quota_exceeded; the chat stays usable once the file is gone."""
    srv = lifecycle_server(make_server, model, CORRAL_WORKSPACE_QUOTA_MB=1,
                           CORRAL_QUOTA_CHECK_INTERVAL_S=1)
    model.scenario([
        big_write("slow", 2, "; sleep 20"),
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "done"}]}},
        text_rule("after", "fine"),
    ])
    u = register(srv)
    chat = Chat(srv, u, permission_mode="auto")
    sent = chat.send("fill slow")
    t0 = time.time()
    sse = chat.stream(after=sent["last_event_id"])
    evs = sse.until(finished(sent["reply"]["id"]), timeout=60)
    sse.close()
    assert time.time() - t0 < 15, "stopped before the tool ended"
    errors = [e["data"] for e in evs if e["event"] == "error"]
    assert errors and errors[0]["code"] == "quota_exceeded", evs
    assert evs[-1]["data"]["status"] == "failed"
    reply = chat.message(sent["reply"]["id"])
    assert reply["error"]["code"] == "quota_exceeded"
    os.remove(os.path.join(chat.workspace(), "slow"))
    time.sleep(1.2)
    again = chat.send("after")
    assert chat.wait_reply(again["reply"]["id"])["status"] == "completed"


def test_fsize_limit_fails_the_write_inside(make_server, model):
    """A Bash write past RLIMIT_FSIZE fails inside the sandbox: the tool
    result the model gets is an error, the turn completes and the server
    stays healthy."""
    srv = lifecycle_server(make_server, model, CORRAL_SANDBOX_FSIZE_MB=1,
                           CORRAL_WORKSPACE_QUOTA_MB=0)
    model.scenario([
        big_write("huge", 3),
        {"match": {"tool_result": True, "tool_result_is_error": True},
         "reply": {"blocks": [{"type": "text", "text": "write failed"}]}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "write worked"}]}},
    ])
    u = register(srv)
    chat = Chat(srv, u, permission_mode="auto")
    sent = chat.send("fill huge")
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "completed", reply
    assert reply["content"][-1]["text"] == "write failed"
    size = os.path.getsize(os.path.join(chat.workspace(), "huge"))
    assert size <= 1 << 20
    assert requests.get(srv.url("/healthz"), timeout=5).status_code == 200
