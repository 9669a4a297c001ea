"""The memory bus's global ring cap (config bus_ring_total_bytes): all
chats' replay rings together stay under it, /metrics shows the bytes held
and the events dropped, and a resume from a dropped id reads the durable
log: every event comes back, in order (DESIGN.md §4)."""

import re

import requests

from conftest import register
from pipeline_util import SSE

CAP = 16384


def metric(srv, name):
    text = requests.get(srv.url("/metrics"), timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} missing"
    return float(m.group(1))


def publish_n(srv, token, chat, n, pad):
    for i in range(n):
        r = srv.post(f"/admin/chats/{chat}/events",
                     json={"t_ns": i + 1, "pad": pad}, token=token)
        assert r.status_code == 202, r.text
        assert r.json()["id"] == i + 1


def replay(srv, chat, token, last_event_id, last):
    sse = SSE(srv, chat, token, last_event_id=last_event_id)
    try:
        assert sse.status == 200
        got = sse.until(lambda ev: ev.get("id") == str(last), timeout=20)
    finally:
        sse.close()
    return [ev for ev in got if ev.get("event") == "bench"]


def test_resume_from_an_evicted_id_returns_every_event(make_server):
    srv = make_server(env={"CORRAL_BENCH_PUBLISH": "true",
                           "CORRAL_BUS_RING_TOTAL_BYTES": str(CAP),
                           "CORRAL_REDIS_URL": None})
    admin = register(srv)
    chats = []
    for _ in range(2):
        r = srv.post("/chats", json={"title": "ring"}, token=admin.access)
        assert r.status_code == 201, r.text
        chats.append(r.json()["id"])
    pad = "x" * 500  # each event about 1.1 KB in the ring: 60 are 66 KB
    for chat in chats:
        publish_n(srv, admin.access, chat, 60, pad)
    held = metric(srv, "corral_bus_ring_bytes")
    evicted = metric(srv, "corral_bus_ring_evictions_total")
    assert 0 < held <= CAP, held
    assert evicted >= 120 - CAP // 1000, evicted
    # The first chat lost its whole ring; the second keeps its tail. Both
    # resume from an evicted id with every event, in order, intact.
    for chat in chats:
        events = replay(srv, chat, admin.access, 3, 60)
        assert [int(ev["id"]) for ev in events] == list(range(4, 61))
        assert [ev["data"]["t_ns"] for ev in events] == list(range(4, 61))
        assert all(ev["data"]["pad"] == pad for ev in events)
    # A resume inside the second chat's ring needs no log read; still right.
    events = replay(srv, chats[1], admin.access, 58, 60)
    assert [int(ev["id"]) for ev in events] == [59, 60]
    assert metric(srv, "corral_bus_ring_bytes") <= CAP
