#!/usr/bin/python3
"""Helpers of bench/run (Python 3 standard library only).

    benchlib.py setup BASE NCHATS CHANFILE      -> prints an API key
    benchlib.py turns BASE KEY N                -> turn latency JSON (shape 8)
    benchlib.py cli-floor CLI MODEL_URL N       -> the CLI's own floor JSON
    benchlib.py logins BASE CREDFILE RATE SECS  -> login storm JSON (shape 9)
    benchlib.py rss PID...                      -> {"rss_kb", "private_dirty_kb"}
    benchlib.py record CLI MODEL_URL TURNS OUT  -> the CLI's stream-json (shape 7)
    benchlib.py post BASE KEY CHANFILE TURNS CONNS -> posts shape 7's messages
    benchlib.py probe BASE PID                  -> /healthz and loop lag JSON

bench/run calls these; they are not meant to be used alone."""

import http.client
import json
import os
import select
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid


def die(msg):
    print(f"benchlib: error: {msg}", file=sys.stderr)
    sys.exit(1)


class Api:
    """One kept-alive HTTP/1.1 connection to corrald."""

    def __init__(self, base, token=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, method, path, body=None, expect=(200, 201, 202)):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body) if body is not None else None
        self.conn.request(method, "/api/v1" + path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status not in expect:
            die(f"{method} {path}: {r.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None


def setup(base, nchats, chanfile):
    api = Api(base)
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = "bench-" + uuid.uuid4().hex
    reg = api.call("POST", "/auth/register",
                   {"email": email, "password": password,
                    "display_name": "bench"})
    if reg["user"]["role"] != "admin":
        die("the bench user is not admin: the database was not fresh")
    api.token = reg["access_token"]
    key = api.call("POST", "/auth/api-keys", {"name": "bench"})["key"]
    api.token = key
    with open(chanfile, "w") as f:
        for i in range(nchats):
            chat = api.call("POST", "/chats", {"title": f"bench {i}",
                                               "permission_mode": "auto"})
            f.write(chat["id"] + "\n")
    with open(chanfile + ".login", "w") as f:
        json.dump({"email": email, "password": password}, f)
    print(key)


def logins(base, credfile, rate, secs):
    """POST /auth/login at RATE per second for SECS (shape 9), each on its
    own thread so a slow answer does not hold the pace back."""
    cred = json.load(open(credfile))
    times, statuses, lock = [], {}, threading.Lock()

    def one():
        t0 = time.monotonic()
        try:
            api = Api(base)
            api.conn.request("POST", "/api/v1/auth/login", body=json.dumps(cred),
                             headers={"Content-Type": "application/json"})
            r = api.conn.getresponse()
            r.read()
            status = str(r.status)
        except OSError as e:
            status = type(e).__name__
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                times.append((time.monotonic() - t0) * 1000)

    threads, start = [], time.monotonic()
    for i in range(int(rate * secs)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(30)
    print(json.dumps({"logins": len(times), "errors": sum(statuses.values()) - len(times),
                      "statuses": statuses,
                      "lat_ms": {"p50": pct(times, 50), "p99": pct(times, 99)}}))


class SseReader(threading.Thread):
    """Reads one chat's SSE stream; records (monotonic time, event, data)."""

    def __init__(self, base, key, chat):
        super().__init__(daemon=True)
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        self.conn.request("GET", f"/api/v1/chats/{chat}/stream", headers={
            "Authorization": f"Bearer {key}", "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            die(f"stream: {self.resp.status}")
        self.cond = threading.Condition()
        self.events = []

    def run(self):
        ev, data = None, ""
        while True:
            line = self.resp.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and ev:
                with self.cond:
                    self.events.append((time.monotonic(), ev, data))
                    self.cond.notify_all()
                ev, data = None, ""

    def wait_for(self, start, pred, timeout):
        """First event from index start on that pred accepts."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.events):
                    if pred(*self.events[i][1:]):
                        return i, self.events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, None
                self.cond.wait(left)


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))], 3)


def turns(base, key, n):
    """POST .../messages to the first assistant_text_delta, first turn (CLI
    start included) and n follow-up turns on the warm CLI."""
    api = Api(base, key)
    chat = api.call("POST", "/chats", {"title": "turns",
                                       "permission_mode": "auto"})["id"]
    sse = SseReader(base, key, chat)
    sse.start()
    sse.wait_for(0, lambda ev, d: ev == "ready", 10)
    times, errors = [], 0
    for i in range(n + 1):
        mark = len(sse.events)
        t0 = time.monotonic()
        ans = api.call("POST", f"/chats/{chat}/messages",
                       {"content": f"bench turn {i}"})
        ids = {ans["message"]["id"], ans["reply"]["id"]}
        idx, first = sse.wait_for(
            mark, lambda ev, d: ev == "assistant_text_delta", 120)
        if first is None:
            errors += 1
            break
        times.append((first[0] - t0) * 1000)
        # The next turn starts only once this run has ended (its checkpoint
        # included), so a follow-up never waits behind it in the queue.
        done, end = sse.wait_for(idx, lambda ev, d: ev == "message_status" and
                                 json.loads(d).get("message_id") in ids and
                                 json.loads(d).get("phase") in
                                 ("done", "failed", "cancelled"), 120)
        if done is None or json.loads(end[2]).get("phase") != "done":
            errors += 1
            break
    follow = times[1:]
    print(json.dumps({
        "first_turn_ms": round(times[0], 3) if times else None,
        "follow_ups": len(follow), "errors": errors,
        "follow_ms": {"p50": pct(follow, 50), "p99": pct(follow, 99),
                      "max": pct(follow, 100)}}))


def cli_floor(cli, model_url, n):
    """The CLI alone: a user line written on stdin to its first text delta
    (stream_event content_block_delta), on a warm process (the way DESIGN.md
    §5 judges turn latency)."""
    env = dict(os.environ, ANTHROPIC_BASE_URL=model_url,
               ANTHROPIC_API_KEY="sk-bench", CLAUDE_CODE_MAX_RETRIES="0",
               DISABLE_TELEMETRY="1", DISABLE_AUTOUPDATER="1",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
               HOME=os.environ.get("BENCH_CLI_HOME", "/tmp"))
    cwd = os.environ.get("BENCH_CLI_HOME", "/tmp")
    p = subprocess.Popen(
        [cli, "--output-format", "stream-json", "--verbose",
         "--input-format", "stream-json", "--include-partial-messages",
         "--permission-mode", "default", "--model", "claude-sonnet-4-5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    buf = b""

    def read_until(pred, timeout):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if pred(obj):
                    return obj
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                return None
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                return None
            buf += chunk

    times = []
    try:
        for i in range(n + 1):
            msg = {"type": "user", "message": {"role": "user", "content": [
                {"type": "text", "text": f"bench turn {i}"}]}}
            t0 = time.monotonic()
            p.stdin.write((json.dumps(msg) + "\n").encode())
            p.stdin.flush()
            # The first text delta: what corral turns into the first
            # assistant_text_delta (message_start comes earlier).
            if read_until(lambda o: o.get("type") == "stream_event" and
                          (o.get("event") or {}).get("type") ==
                          "content_block_delta", 120) is None:
                break
            times.append((time.monotonic() - t0) * 1000)
            if read_until(lambda o: o.get("type") == "result", 120) is None:
                break
    finally:
        p.kill()
        p.wait()
    follow = times[1:]
    print(json.dumps({"first_turn_ms": round(times[0], 3) if times else None,
                      "follow_ups": len(follow),
                      "follow_ms": {"p50": pct(follow, 50),
                                    "p99": pct(follow, 99)}}))


def record(cli, model_url, nturns, out):
    """Records the real CLI's stdout the way corral drives it (DESIGN.md §5
    argv, the initialize control request, stream-json user lines): one
    {"dir": "in"|"out", "line": ...} object a line, in order, for bench's
    clireplay (bench/fixtures/README.md)."""
    home = os.environ.get("BENCH_CLI_HOME", "/tmp")
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
           "TERM": "dumb", "ANTHROPIC_BASE_URL": model_url,
           "ANTHROPIC_API_KEY": "sk-ant-corral-placeholder",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "CLAUDE_CODE_MAX_RETRIES": "0"}
    p = subprocess.Popen(
        [cli, "-p", "--output-format", "stream-json", "--verbose",
         "--input-format", "stream-json", "--permission-prompt-tool", "stdio",
         "--include-partial-messages", "--model", "claude-sonnet-4-5",
         "--permission-mode", "default",
         "--session-id=" + str(uuid.uuid4())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env, cwd=home)
    log, buf = [], b""

    def send(obj):
        log.append({"dir": "in", "line": obj})
        p.stdin.write((json.dumps(obj) + "\n").encode())
        p.stdin.flush()

    def read_until(pred, timeout=60):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                log.append({"dir": "out", "line": obj})
                if obj.get("type") == "control_request" and \
                        obj["request"].get("subtype") == "can_use_tool":
                    send({"type": "control_response", "response": {
                        "subtype": "success", "request_id": obj["request_id"],
                        "response": {"behavior": "allow",
                                     "updatedInput": obj["request"]["input"]}}})
                if pred(obj):
                    return obj
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                die("the CLI did not answer in time")
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                die("the CLI exited")
            buf += chunk

    try:
        send({"type": "control_request", "request_id": "corral_1",
              "request": {"subtype": "initialize", "hooks": None}})
        read_until(lambda o: o.get("type") == "control_response")
        for i in range(nturns):
            send({"type": "user", "message": {"role": "user",
                                              "content": f"bench turn {i}"},
                  "parent_tool_use_id": None, "session_id": "default",
                  "uuid": str(uuid.uuid4())})
            read_until(lambda o: o.get("type") == "result")
    finally:
        p.kill()
        p.wait()
    with open(out, "w") as f:
        for entry in log:
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")


def post(base, key, chanfile, nturns, conns):
    """Shape 7: TURNS messages to every chat of CHANFILE (the later ones
    queue behind the first and meet its warm CLI), over CONNS kept-alive
    connections; prints when posting began (CLOCK_REALTIME ns) and took."""
    import queue
    chats = [c for c in open(chanfile).read().split() if c]
    work = queue.Queue()
    for t in range(nturns):
        for c in chats:
            work.put((c, t))
    statuses, lock = {}, threading.Lock()

    def worker():
        api = None
        while True:
            try:
                chat, t = work.get_nowait()
            except queue.Empty:
                return
            status = "error"
            for _ in range(2):  # one retry on a broken keep-alive
                try:
                    api = api or Api(base, key)
                    api.conn.request(
                        "POST", f"/api/v1/chats/{chat}/messages",
                        body=json.dumps({"content": f"bench turn {t}"}),
                        headers={"Content-Type": "application/json",
                                 "Authorization": f"Bearer {key}"})
                    r = api.conn.getresponse()
                    r.read()
                    status = str(r.status)
                    break
                except (OSError, http.client.HTTPException) as e:
                    status, api = type(e).__name__, None
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    t0_ns, t0 = time.time_ns(), time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(json.dumps({"posted": statuses.get("202", 0),
                      "errors": sum(statuses.values()) - statuses.get("202", 0),
                      "statuses": statuses, "t0_ns": t0_ns,
                      "post_s": round(time.monotonic() - t0, 3)}))


def probe(base, pid, every=0.01):
    """Until process PID ends: GET /healthz every 10 ms on a kept-alive
    connection (its latency), and corral_loop_lag_seconds from /metrics
    every 250 ms (its largest sample). One thread: nothing else shares it."""
    health, errors, lags, last_metrics = [], 0, [], 0.0
    api = None
    lag_max = None

    def get(path):
        nonlocal api
        api = api or Api(base)
        api.conn.request("GET", path)
        r = api.conn.getresponse()
        body = r.read()
        return r.status, body

    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        t0 = time.perf_counter()
        try:
            status, _ = get("/healthz")
            if status == 200:
                health.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors, api = errors + 1, None
        if t0 - last_metrics >= 0.25:
            last_metrics = t0
            try:
                status, body = get("/metrics")
                for line in body.decode().splitlines():
                    if line.startswith("corral_loop_lag_seconds "):
                        lags.append(float(line.split()[1]) * 1000)
                    elif line.startswith("corral_loop_lag_max_seconds "):
                        lag_max = float(line.split()[1]) * 1000
            except (OSError, http.client.HTTPException, ValueError):
                api = None
        left = every - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
    print(json.dumps({"health": {"n": len(health), "errors": errors,
                                 "p50_ms": pct(health, 50),
                                 "p99_ms": pct(health, 99),
                                 "max_ms": pct(health, 100)},
                      "loop_lag_ms": {"samples": len(lags),
                                      "p99": pct(lags, 99),
                                      "max_sampled": pct(lags, 100),
                                      "max_since_start": lag_max}}))


def rss(pids):
    """VmRSS and Private_Dirty summed over the given processes, in KiB."""
    total = {"rss_kb": 0, "private_dirty_kb": 0}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total["rss_kb"] += int(line.split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Private_Dirty:"):
                        total["private_dirty_kb"] += int(line.split()[1])
        except OSError:
            pass
    print(json.dumps(total))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "setup":
        setup(args[0], int(args[1]), args[2])
    elif cmd == "turns":
        turns(args[0], args[1], int(args[2]))
    elif cmd == "cli-floor":
        cli_floor(args[0], args[1], int(args[2]))
    elif cmd == "logins":
        logins(args[0], args[1], float(args[2]), float(args[3]))
    elif cmd == "rss":
        rss(args)
    elif cmd == "post":
        post(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "probe":
        probe(args[0], int(args[1]))
    elif cmd == "record":
        record(args[0], args[1], int(args[2]), args[3])
    else:
        die(f"unknown command {cmd}")
