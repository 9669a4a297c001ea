"""Operations endpoints (API.md "Operations"), request ids, routing errors
and CORS."""

import re
import socket
import time
import uuid

import pytest
import requests

from conftest import assert_problem, free_port, register, require_env


def test_healthz(server):
    r = requests.get(server.url("/healthz"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ok"}
    assert r.headers.get("X-Request-Id")


def test_readyz_without_redis(server):
    r = requests.get(server.url("/readyz"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "postgres": "ok",
                        "redis": "disabled"}


def test_readyz_with_redis(make_server):
    redis_url = require_env("CORRAL_TEST_REDIS_URL")
    srv = make_server(env={"CORRAL_REDIS_URL": redis_url})
    r = requests.get(srv.url("/readyz"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "postgres": "ok", "redis": "ok"}


def test_readyz_with_unreachable_redis(make_server):
    """Readiness reports a Redis that is down (503), liveness does not."""
    srv = make_server(env={"CORRAL_REDIS_URL":
                           f"redis://127.0.0.1:{free_port()}/0"},
                      ready=False)
    assert requests.get(srv.url("/healthz"), timeout=10).status_code == 200
    r = requests.get(srv.url("/readyz"), timeout=10)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["postgres"] == "ok"
    assert body["redis"] != "ok"
    assert body["status"] != "ready"


def _metric_value(text, name, **labels):
    """The value of the sample `name{labels...}` (labels in any order)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                              m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def test_metrics(server):
    for _ in range(3):
        assert requests.get(server.url("/healthz"), timeout=10).ok
    r = requests.get(server.url("/metrics"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    for name in ("corral_http_requests_total",
                 "corral_http_request_duration_seconds_bucket",
                 "corral_http_connections_open", "corral_pg_pool_size",
                 "corral_loop_lag_seconds"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), f"{name} missing"
    assert re.search(r'^corral_http_requests_total\{[^}]*route="[^"]+"', text,
                     re.M), "requests_total has no route label"
    before = _metric_value(text, "corral_http_requests_total",
                           route="healthz", status="200")
    assert before is not None and before >= 3, text
    for _ in range(4):
        assert requests.get(server.url("/healthz"), timeout=10).ok
    after = _metric_value(requests.get(server.url("/metrics"), timeout=10)
                          .text, "corral_http_requests_total",
                          route="healthz", status="200")
    assert after >= before + 4
    assert _metric_value(text, "corral_pg_pool_size") == 4  # the default
    inf = _metric_value(text, "corral_http_request_duration_seconds_bucket",
                        route="healthz", le="+Inf")
    assert inf is not None and inf >= 3


def test_request_id_echoed(server):
    rid = "it-" + uuid.uuid4().hex
    r = requests.get(server.url("/healthz"), headers={"X-Request-Id": rid},
                     timeout=10)
    assert r.headers.get("X-Request-Id") == rid
    r = server.get("/auth/me", headers={"X-Request-Id": rid})
    assert r.status_code == 401
    assert r.headers.get("X-Request-Id") == rid


def test_request_id_insane_value_not_echoed(server):
    bad = "bad id <script>" + "x" * 300
    r = requests.get(server.url("/healthz"), headers={"X-Request-Id": bad},
                     timeout=10)
    rid = r.headers.get("X-Request-Id")
    assert rid and rid != bad
    assert "<" not in rid and " " not in rid


def test_request_ids_are_unique(server):
    ids = {requests.get(server.url("/healthz"), timeout=10)
           .headers["X-Request-Id"] for _ in range(20)}
    assert len(ids) == 20


def test_request_id_on_every_kind_of_answer(server):
    """Successes and errors alike carry X-Request-Id (413 included)."""
    user = register(server)
    answers = {
        "200 me": server.get("/auth/me", token=user.access),
        "201 key": server.post("/auth/api-keys", json={"name": "rid"},
                               token=user.access),
        "204 logout": server.post("/auth/logout",
                                  json={"refresh_token": user.refresh}),
        "400": server.post("/auth/login", data=b"{",
                           headers={"Content-Type": "application/json"}),
        "401": server.get("/auth/me"),
        "404": server.get("/no/such/thing"),
        "405": server.delete("/auth/login"),
        "415": server.post("/auth/login", data=b"{}",
                           headers={"Content-Type": "text/plain"}),
        "422": server.post("/auth/register", json={"email": 5}),
        "413": server.post("/auth/login", data=b" " * (1048576 + 10),
                           headers={"Content-Type": "application/json"}),
    }
    missing = [k for k, r in answers.items()
               if not r.headers.get("X-Request-Id")]
    assert not missing, f"answers without X-Request-Id: {missing}"


def test_unknown_path_404(server):
    for path in ("/nope", "/api/v1/nope", "/api/v1/auth/me/extra",
                 "/api/v2/auth/me"):
        r = requests.get(server.url(path), timeout=10)
        assert_problem(r, 404, "not_found")


def test_wrong_method_405_with_allow(server):
    r = requests.get(server.api_url("/auth/login"), timeout=10)
    assert_problem(r, 405, "method_not_allowed")
    allow = {m.strip() for m in r.headers["Allow"].split(",")}
    assert "POST" in allow and "GET" not in allow
    r = requests.put(server.api_url("/auth/api-keys"), timeout=10)
    assert_problem(r, 405, "method_not_allowed")
    allow = {m.strip() for m in r.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allow
    r = requests.post(server.url("/healthz"), timeout=10)
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["Allow"]


def test_cors_preflight(make_server):
    srv = make_server(env={"CORRAL_CORS_ORIGINS": "http://a.example"})
    pre = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type, authorization"}
    r = requests.options(srv.api_url("/auth/login"),
                         headers={"Origin": "http://a.example", **pre},
                         timeout=10)
    assert r.status_code == 204, r.text
    assert r.headers.get("Access-Control-Allow-Origin") == "http://a.example"
    assert "POST" in r.headers.get("Access-Control-Allow-Methods", "")
    r = requests.options(srv.api_url("/auth/login"),
                         headers={"Origin": "http://b.example", **pre},
                         timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    # Actual requests: the allowed origin is marked, another is not.
    r = requests.get(srv.url("/healthz"),
                     headers={"Origin": "http://a.example"}, timeout=10)
    assert r.headers.get("Access-Control-Allow-Origin") == "http://a.example"
    r = requests.get(srv.url("/healthz"),
                     headers={"Origin": "http://a.example.evil"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_no_cors_by_default(server):
    r = requests.options(server.api_url("/auth/login"),
                         headers={"Origin": "http://a.example",
                                  "Access-Control-Request-Method": "POST"},
                         timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(server.url("/healthz"),
                     headers={"Origin": "http://a.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_request_id_on_header_timeout(make_server):
    """The 408 of a stalled request head carries an X-Request-Id too."""
    srv = make_server(env={"CORRAL_HEADER_TIMEOUT_MS": "300"})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        data = _read_until_closed(s, 5)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nx-request-id:" in head, data[:300]


# ------------------------------------------------------------ HTTP/1.1

def _read_until_closed(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _raw(srv, payload, timeout=5):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(payload)
        return _read_until_closed(s, timeout)


def test_keep_alive_serves_many_requests(server):
    with requests.Session() as s:
        for _ in range(25):
            r = s.get(server.url("/healthz"), timeout=10)
            assert r.status_code == 200
        r = s.get(server.url("/readyz"), timeout=10)
        assert r.status_code == 200


def test_pipelined_requests_answered_in_order(server):
    """Two requests in one write (the first needs the database): both are
    answered, in order."""
    payload = (b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-1\r\n"
               b"\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-2\r\n"
               b"Connection: close\r\n\r\n")
    data = _raw(server, payload)
    assert data.count(b"HTTP/1.1 200") == 2, data
    first = data.lower().find(b"x-request-id: pipe-1")
    second = data.lower().find(b"x-request-id: pipe-2")
    assert 0 <= first < second, data


@pytest.mark.parametrize("payload", [
    b"\x00\x01\x02\x03garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{}",
], ids=["binary", "no-target", "bad-version", "bad-header", "bad-length",
        "bad-chunk", "short-body"])
def test_malformed_http_does_not_hurt(server, payload):
    """Broken requests get an error or a closed connection; never a 2xx,
    and the server keeps serving (sanitizers watch the rest)."""
    data = _raw(server, payload, timeout=2)
    if data:
        status = data.split(b"\r\n", 1)[0]
        assert not re.match(rb"HTTP/1\.[01] 2", status), data[:200]
    assert requests.get(server.url("/healthz"), timeout=5).status_code == 200


def test_huge_header_refused(server):
    payload = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " +
               b"a" * (256 * 1024) + b"\r\n\r\n")
    try:
        data = _raw(server, payload, timeout=5)
    except (BrokenPipeError, ConnectionResetError):
        data = b""
    if data:
        status = data.split(b"\r\n", 1)[0]
        assert not re.match(rb"HTTP/1\.[01] 2", status), data[:200]
    assert requests.get(server.url("/healthz"), timeout=5).status_code == 200


def test_pool_size_in_metrics(make_server):
    srv = make_server(env={"CORRAL_PG_POOL_SIZE": "2"})
    text = requests.get(srv.url("/metrics"), timeout=10).text
    assert _metric_value(text, "corral_pg_pool_size") == 2


def test_keepalive_timeout_closes_idle_connections(make_server):
    srv = make_server(env={"CORRAL_KEEPALIVE_TIMEOUT_MS": "500"})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        t0 = time.monotonic()
        rest = _read_until_closed(s, 5)
        idle = time.monotonic() - t0
    print(f"idle keep-alive connection closed after {idle:.2f} s")
    assert not rest.startswith(b"HTTP/1.1 2"), rest[:100]
    assert 0.3 <= idle <= 1.5, idle
