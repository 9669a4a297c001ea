"""The bench publishing endpoint (API.md Admin: POST
/admin/chats/{id}/events): absent unless config bench_publish, admins
only, a checked body that publishes nothing when refused, and a durable
`bench` event that reaches the chat's stream under the id it answered."""

import time
import uuid

import pytest

from conftest import assert_problem, register, serve
from pipeline_util import SSE


@pytest.fixture(scope="module")
def srv(cluster, logdir):
    yield from serve(cluster, logdir, "bench",
                     {"CORRAL_ACCESS_TOKEN_TTL": "600",
                      "CORRAL_BENCH_PUBLISH": "true"})


@pytest.fixture(scope="module")
def admin(srv):
    a = register(srv)
    assert a.role == "admin"
    return a


def new_chat(srv, user):
    r = srv.post("/chats", json={"title": "bench"}, token=user.access)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def publish(srv, token, chat_id, body):
    return srv.post(f"/admin/chats/{chat_id}/events", json=body, token=token)


def test_event_reaches_the_stream_with_its_id(srv, admin):
    user = register(srv)
    chat = new_chat(srv, user)
    sse = SSE(srv, chat, user.access)
    try:
        sse.until(lambda ev: ev.get("event") == "ready", timeout=10)
        ids = []
        for i in range(3):
            t_ns = time.time_ns()
            r = publish(srv, admin.access, chat, {"t_ns": t_ns,
                                                  "pad": "x" * (i * 100)})
            assert r.status_code == 202, r.text
            assert set(r.json()) == {"id"}
            ids.append((r.json()["id"], t_ns, i * 100))
        assert [i for i, _, _ in ids] == [1, 2, 3]
        got = sse.until(lambda ev: ev.get("id") == "3", timeout=10)
        bench = [ev for ev in got if ev.get("event") == "bench"]
        assert [(int(ev["id"]), ev["data"]["t_ns"], len(ev["data"]["pad"]))
                for ev in bench] == ids
    finally:
        sse.close()
    # durable: a replay from the start returns them too
    again = SSE(srv, chat, user.access, after=0)
    try:
        got = again.until(lambda ev: ev.get("event") == "ready", timeout=10)
        assert [ev["id"] for ev in got if ev.get("event") == "bench"] == \
            ["1", "2", "3"]
    finally:
        again.close()


def test_pad_is_optional_and_bounded(srv, admin):
    chat = new_chat(srv, admin)
    r = publish(srv, admin.access, chat, {"t_ns": 1})
    assert r.status_code == 202, r.text
    r = publish(srv, admin.access, chat, {"t_ns": 2, "pad": "x" * 65536})
    assert r.status_code == 202, r.text
    r = publish(srv, admin.access, chat, {"t_ns": 3, "pad": "x" * 65537})
    assert "pad" in assert_problem(r, 422, "validation_failed")["detail"]


@pytest.mark.parametrize("body,field", [
    ({}, "t_ns"),
    ({"t_ns": "1"}, "t_ns"),
    ({"t_ns": 1.5}, "t_ns"),
    ({"t_ns": 1, "pad": 7}, "pad"),
    ({"t_ns": 1, "seq": 1}, "seq"),
])
def test_bad_body_is_422_and_publishes_nothing(srv, admin, body, field):
    chat = new_chat(srv, admin)
    r = publish(srv, admin.access, chat, body)
    assert field in assert_problem(r, 422, "validation_failed")["detail"]
    r = publish(srv, admin.access, chat, {"t_ns": 1})
    assert r.status_code == 202 and r.json()["id"] == 1, r.text


def test_non_admin_is_403(srv, admin):
    user = register(srv)
    chat = new_chat(srv, user)
    r = publish(srv, user.access, chat, {"t_ns": 1})
    assert_problem(r, 403)
    r = publish(srv, admin.access, chat, {"t_ns": 1})
    assert r.status_code == 202 and r.json()["id"] == 1, r.text


def test_unknown_chat_is_404(srv, admin):
    r = publish(srv, admin.access, str(uuid.uuid4()), {"t_ns": 1})
    assert_problem(r, 404, "not_found")
    r = publish(srv, admin.access, "not-a-uuid", {"t_ns": 1})
    assert_problem(r, 404, "not_found")


def test_disabled_by_default_is_404(make_server):
    plain = make_server()
    admin = register(plain)
    assert admin.role == "admin"
    chat = new_chat(plain, admin)
    r = publish(plain, admin.access, chat, {"t_ns": 1})
    assert_problem(r, 404, "not_found")
    sse = SSE(plain, chat, admin.access, after=0)
    try:
        got = sse.until(lambda ev: ev.get("event") == "ready", timeout=10)
        assert [ev for ev in got if ev.get("event") == "bench"] == []
    finally:
        sse.close()


def test_log_keeps_awkward_payloads_exactly(srv, admin):
    """The group commit sends its rows as array literals: quotes,
    backslashes, braces, commas and non-ASCII text come back unchanged."""
    user = register(srv)
    chat = new_chat(srv, user)
    pads = ['"quoted", {braced}', "back\\slash \\\" mix", "NULL",
            "naïve ☃ 𝄞", ""]
    for pad in pads:
        r = publish(srv, admin.access, chat, {"t_ns": 1, "pad": pad})
        assert r.status_code == 202, r.text
    rows = []
    deadline = time.time() + 10
    while len(rows) < len(pads) and time.time() < deadline:
        rows = srv.db.query("SELECT payload FROM events WHERE chat_id = %s"
                            " AND type = 'bench' ORDER BY seq", (chat,))
        time.sleep(0.05)
    assert [r[0]["pad"] for r in rows] == pads
