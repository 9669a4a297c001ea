"""The cap on live CLIs (DESIGN.md §5, cli_max_live): a launch at the cap
closes the least recently used idle CLI; with none idle, the run waits in
QUEUED and starts once a CLI has exited."""

import re
import time

import requests

from conftest import _TEST_SERVERS, register
from pipeline_util import Chat, model, pipeline_env, text_rule


def cap_server(make_server, model, cap):
    srv = make_server(env=pipeline_env(model, CORRAL_CLI_MAX_LIVE=str(cap)))
    _TEST_SERVERS.append(srv)
    return srv


def slots(srv):
    text = requests.get(srv.url("/metrics"), timeout=10).text
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r"^corral_cli_(slots_held|slots_max|slot_waiters|evictions_total)"
        r" (\d+)$", text, re.M)}


def status(chat):
    r = chat.srv.get(f"/chats/{chat.id}/status", token=chat.user.access)
    assert r.status_code == 200, r.text
    return r.json()["status"]


def test_lru_idle_cli_is_closed_at_the_cap(make_server, model):
    model.scenario([text_rule("", "fine.")])
    srv = cap_server(make_server, model, 2)
    user = register(srv)
    a, b, c = (Chat(srv, user) for _ in range(3))
    for chat in (a, b):
        sent = chat.send("hello")
        assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
        chat.wait_idle()
    # a was used least recently: c's launch closes a's CLI, not b's.
    assert slots(srv) == {"slots_held": 2, "slots_max": 2,
                          "slot_waiters": 0, "evictions_total": 0}
    sent = c.send("hello")
    assert c.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert slots(srv)["evictions_total"] == 1
    assert f"chat {a.id}: closing its idle CLI" in srv.log_text()
    assert f"chat {b.id}: closing its idle CLI" not in srv.log_text()
    # b's CLI is still warm: its next turn launches nothing.
    launches = srv.log_text().count(f"chat {b.id}: CLI exited")
    sent = b.send("again")
    assert b.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert srv.log_text().count(f"chat {b.id}: CLI exited") == launches
    assert slots(srv)["slots_held"] <= 2


def test_run_waits_queued_while_every_cli_is_busy(make_server, model):
    model.scenario([text_rule("slow", "done slowly.", first_delay_ms=4000),
                    text_rule("", "quick.")])
    srv = cap_server(make_server, model, 1)
    user = register(srv)
    busy, waiting = Chat(srv, user), Chat(srv, user)
    first = busy.send("slow please")
    deadline = time.time() + 30
    while status(busy) != "running" and time.time() < deadline:
        time.sleep(0.05)
    second = waiting.send("hello")
    time.sleep(1.0)
    # The only slot is busy: the second chat's run has not started.
    assert status(busy) == "running"
    assert status(waiting) == "queued"
    assert waiting.message(second["reply"]["id"])["status"] == "queued"
    assert slots(srv)["slot_waiters"] == 1
    assert busy.wait_reply(first["reply"]["id"])["status"] == "completed"
    reply = waiting.wait_reply(second["reply"]["id"])
    assert reply["status"] == "completed"
    assert "quick." in str(reply["content"])
    s = slots(srv)
    assert s["slot_waiters"] == 0 and s["slots_held"] == 1
    assert s["evictions_total"] == 1
