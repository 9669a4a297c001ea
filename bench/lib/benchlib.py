#!/usr/bin/python3
"""Helpers of bench/run (Python 3 standard library only).

    benchlib.py setup BASE NCHATS CHANFILE      -> prints an API key
    benchlib.py turns BASE KEY N                -> turn latency JSON (shape 8)
    benchlib.py cli-floor CLI MODEL_URL N       -> the CLI's own floor JSON
    benchlib.py logins BASE CREDFILE RATE SECS  -> login storm JSON (shape 9)
    benchlib.py rss PID...                      -> {"rss_kb", "private_dirty_kb"}

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
    own thread so a slow answer does not hold the pace back. Each attempt
    is made once: a 429 (the hashing queue is full) is counted as refused,
    with its Retry-After, and not retried, so the offered load stays RATE.
    Outcomes: served (200), refused (429), timed out (no answer in 30 s),
    other (any other status or a broken connection)."""
    cred = json.load(open(credfile))
    lat = {"served": [], "refused": []}
    counts = {"served": 0, "refused": 0, "timed_out": 0, "other": 0}
    statuses, retry_after, lock = {}, [], threading.Lock()

    def one():
        t0 = time.monotonic()
        ra = None
        try:
            api = Api(base)
            api.conn.request("POST", "/api/v1/auth/login", body=json.dumps(cred),
                             headers={"Content-Type": "application/json"})
            r = api.conn.getresponse()
            r.read()
            status, ra = str(r.status), r.getheader("Retry-After")
        except TimeoutError:
            status = "timeout"
        except OSError as e:
            status = type(e).__name__
        ms = (time.monotonic() - t0) * 1000
        kind = {"200": "served", "429": "refused", "timeout": "timed_out"}.get(
            status, "other")
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            counts[kind] += 1
            if kind in lat:
                lat[kind].append(ms)
            if ra is not None and ra.isdigit():
                retry_after.append(int(ra))

    threads, start = [], time.monotonic()
    for i in range(int(rate * secs)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(35)
    served = lat["served"]
    print(json.dumps({
        "offered": len(threads), "offered_per_s": rate, **counts,
        "served_per_s": round(len(served) / secs, 2),
        "logins": len(served), "errors": len(threads) - len(served),
        "statuses": statuses,
        "lat_ms": {"p50": pct(served, 50), "p99": pct(served, 99),
                   "max": max(served) if served else None},
        "refused_ms": {"p50": pct(lat["refused"], 50),
                       "p99": pct(lat["refused"], 99)},
        "retry_after_s": {"min": min(retry_after) if retry_after else None,
                          "max": max(retry_after) if retry_after else None}}))


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
    else:
        die(f"unknown command {cmd}")
