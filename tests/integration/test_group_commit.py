"""Group commit of durable events (DESIGN.md §4, config event_batch_delay_ms
and event_batch_eager): the first event after a quiet window is committed
at once (a lone turn's first event is not held back a window), and so are
the next ones while fewer than event_batch_eager were committed in the
window (light load); beyond that, events wait for the window (about one
commit per window under load). The order and ids stay those of API.md
"Stream". The bench endpoint answers only after its event's commit, so
its response time is the commit wait."""

import time

import pytest

from conftest import register, serve
from pipeline_util import SSE

WINDOW_MS = 1000  # the largest event_batch_delay_ms: wide margins
EAGER = 2


@pytest.fixture(scope="module")
def srv(cluster, logdir):
    yield from serve(cluster, logdir, "group-commit",
                     {"CORRAL_ACCESS_TOKEN_TTL": "600",
                      "CORRAL_BENCH_PUBLISH": "true",
                      "CORRAL_EVENT_BATCH_DELAY_MS": str(WINDOW_MS),
                      "CORRAL_EVENT_BATCH_EAGER": str(EAGER)})


def timed_publish(srv, token, chat, t):
    t0 = time.monotonic()
    r = srv.post(f"/admin/chats/{chat}/events", json={"t_ns": t}, token=token)
    assert r.status_code == 202, r.text
    return r.json()["id"], (time.monotonic() - t0) * 1000


def test_leading_edge_then_window(srv):
    admin = register(srv)
    assert admin.role == "admin"
    r = srv.post("/chats", json={"title": "gc"}, token=admin.access)
    assert r.status_code == 201, r.text
    chat = r.json()["id"]
    sse = SSE(srv, chat, admin.access)
    try:
        sse.until(lambda ev: ev.get("event") == "ready", timeout=10)
        time.sleep(WINDOW_MS / 1000 + 0.2)  # the chat's creation is older
        id1, ms1 = timed_publish(srv, admin.access, chat, 1)
        id2, ms2 = timed_publish(srv, admin.access, chat, 2)
        id3, ms3 = timed_publish(srv, admin.access, chat, 3)
        time.sleep(WINDOW_MS / 1000 + 0.2)
        id4, ms4 = timed_publish(srv, admin.access, chat, 4)
        assert ms1 < WINDOW_MS / 2, f"first event after a quiet window: {ms1} ms"
        assert ms2 < WINDOW_MS / 2, f"light load (1 of {EAGER}): {ms2} ms"
        assert ms3 >= WINDOW_MS / 2, f"{EAGER} committed in the window: {ms3} ms"
        assert ms4 < WINDOW_MS / 2, f"after the window again: {ms4} ms"
        assert [id1, id2, id3, id4] == [1, 2, 3, 4]
        got = sse.until(lambda ev: ev.get("id") == "4", timeout=10)
        assert [(ev["id"], ev["data"]["t_ns"]) for ev in got
                if ev.get("event") == "bench"] == [
                    ("1", 1), ("2", 2), ("3", 3), ("4", 4)]
    finally:
        sse.close()
