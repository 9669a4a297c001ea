#!/usr/bin/python3
"""Helpers of bench/run (Python 3 standard library only).

    benchlib.py setup BASE NCHATS CHANFILE      -> prints an API key
    benchlib.py turns BASE KEY N                -> turn latency JSON (shape 8)
    benchlib.py cli-floor BWRAP_PID MODEL_URL N SCRATCH -> the like-for-like floor JSON
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


def dist(values):
    return {"p50": pct(values, 50), "p99": pct(values, 99),
            "max": pct(values, 100)}


# Reply events corral makes itself; every other event of the reply comes
# from a CLI line (the first is `system` init).
CORRAL_EVENTS = ("message_status", "user_message", "usage", "checkpoint")


def turns(base, key, n):
    """POST .../messages to the reply's first events on SSE, first turn (CLI
    start included) and n follow-up turns on the warm CLI. Per turn: the
    202, the first event of the reply of any kind (corral's own
    message_status), the first CLI-originated event (the target's measure)
    and the first assistant_text_delta."""
    api = Api(base, key)
    chat = api.call("POST", "/chats", {"title": "turns",
                                       "permission_mode": "auto"})["id"]
    sse = SseReader(base, key, chat)
    sse.start()
    sse.wait_for(0, lambda ev, d: ev == "ready", 10)
    rows, errors = [], 0
    for i in range(n + 1):
        mark = len(sse.events)
        t0 = time.monotonic()
        ans = api.call("POST", f"/chats/{chat}/messages",
                       {"content": f"bench turn {i}"})
        t202 = time.monotonic()
        ids = {ans["message"]["id"], ans["reply"]["id"]}
        idx, first = sse.wait_for(
            mark, lambda ev, d: ev == "assistant_text_delta", 120)
        if first is None:
            errors += 1
            break
        evs = sse.events[mark:idx + 1]
        reply_any = next(t for t, ev, d in evs if ev != "user_message")
        cli_first = next(t for t, ev, d in evs if ev not in CORRAL_EVENTS)
        rows.append({"accepted": (t202 - t0) * 1000,
                     "any": (reply_any - t0) * 1000,
                     "cli": (cli_first - t0) * 1000,
                     "delta": (first[0] - t0) * 1000})
        # The next turn starts only once this run has ended (its checkpoint
        # included), so a follow-up never waits behind it in the queue.
        done, end = sse.wait_for(idx, lambda ev, d: ev == "message_status" and
                                 json.loads(d).get("message_id") in ids and
                                 json.loads(d).get("phase") in
                                 ("done", "failed", "cancelled"), 120)
        if done is None or json.loads(end[2]).get("phase") != "done":
            errors += 1
            break
    follow = rows[1:]
    col = lambda k: [r[k] for r in follow]
    print(json.dumps({
        "chat": chat,
        "first_turn_ms": round(rows[0]["delta"], 3) if rows else None,
        "first_turn_cli_ms": round(rows[0]["cli"], 3) if rows else None,
        "follow_ups": len(follow), "errors": errors,
        "follow_ms": dist(col("delta")),
        "follow_cli_ms": dist(col("cli")),
        "follow_any_ms": dist(col("any")),
        "follow_accepted_ms": dist(col("accepted"))}))


def proc_limits(pid):
    """The rlimits corral set on its bwrap (local_plan_limits), as
    (resource, value) pairs for setrlimit."""
    names = {"Max address space": "RLIMIT_AS", "Max file size": "RLIMIT_FSIZE",
             "Max core file size": "RLIMIT_CORE",
             "Max cpu time": "RLIMIT_CPU"}
    import resource
    out = []
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            for name, res in names.items():
                if line.startswith(name):
                    soft = line[len(name):].split()[0]
                    v = resource.RLIM_INFINITY if soft == "unlimited" else int(soft)
                    out.append((getattr(resource, res), v))
    return out


def floor_argv(pid, scratch):
    """corrald's exact bwrap command line for the chat (read from the
    running process), with the chat's sandbox tree replaced by scratch and
    --resume by --session-id (scratch has no transcript yet)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
    i = argv.index("/workspace")  # --bind <root>/workspace /workspace
    root = os.path.dirname(argv[i - 1])
    argv = [scratch + a[len(root):] if a.startswith(root + "/") else a
            for a in argv]
    return ["--session-id=" + a[len("--resume="):]
            if a.startswith("--resume=") else a for a in argv]


def cli_floor(bwrap_pid, model_url, n, scratch):
    """The like-for-like floor: the CLI started with corrald's own command
    line for the turns chat (bwrap, its options, env, cwd and rlimits, the
    same in-sandbox gateway forwarder), whose model socket is a plain byte
    forwarder (socat) to the scripted model instead of corrald's gateway.
    Driven as corral drives it: `initialize`, then per turn the user line
    in corral's shape; times from the write to the first line, to
    `system` init (the first line corral publishes) and to the first text
    delta stream_event. The CLI gets corrald's CPU affinity, niceness
    and scheduling class too: under bench/run's pinning corrald's CLIs share core 0 with it."""
    for sub in ("workspace", "home", "run"):
        os.makedirs(os.path.join(scratch, sub), mode=0o700, exist_ok=True)
    argv = floor_argv(bwrap_pid, scratch)
    limits = proc_limits(bwrap_pid)
    cores = os.sched_getaffinity(bwrap_pid)  # bench/run pins corrald's tree
    niceness = os.getpriority(os.PRIO_PROCESS, bwrap_pid)  # child_nice
    policy = os.sched_getscheduler(bwrap_pid)  # SCHED_IDLE at child_nice 20
    u = urllib.parse.urlsplit(model_url)
    sock = os.path.join(scratch, "run", "gw.sock")
    fwd = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},fork,mode=600",
                            f"TCP:{u.hostname}:{u.port}"],
                           stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.02)
    info_r, info_w = os.pipe()

    def child_setup():
        import resource
        os.dup2(info_w, 3)
        for res, v in limits:
            resource.setrlimit(res, (v, v))
        os.sched_setaffinity(0, cores)
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        if policy != os.sched_getscheduler(0):
            os.sched_setscheduler(0, policy, os.sched_param(0))

    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env={}, pass_fds=(3,),
                         preexec_fn=child_setup, start_new_session=True)
    os.close(info_w)  # info_r stays open: bwrap writes its info there
    buf = b""

    def read_line(timeout):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                return None, None
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                return None, None
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        try:
            return time.monotonic(), json.loads(line)
        except ValueError:
            return time.monotonic(), {}

    def send(obj):
        t = time.monotonic()
        p.stdin.write((json.dumps(obj) + "\n").encode())
        p.stdin.flush()
        return t

    rows = []
    try:
        send({"type": "control_request", "request_id": "corral_1",
              "request": {"subtype": "initialize", "hooks": None}})
        while True:
            t, o = read_line(120)
            if o is None or o.get("type") == "control_response":
                break
        for i in range(n + 1):
            t0 = send({"type": "user", "message": {
                "role": "user", "content": f"bench turn {i}"},
                "parent_tool_use_id": None, "session_id": "default",
                "uuid": str(uuid.uuid4())})
            row = {}
            while True:
                t, o = read_line(120)
                if o is None:
                    raise RuntimeError("the CLI stopped answering")
                ms = (t - t0) * 1000
                row.setdefault("line", ms)
                if o.get("type") == "system" and o.get("subtype") == "init":
                    row.setdefault("init", ms)
                ev = o.get("event") or {}
                if o.get("type") == "stream_event":
                    row.setdefault("stream", ms)
                    if ev.get("type") == "content_block_delta":
                        row.setdefault("delta", ms)
                if o.get("type") == "result":
                    break
            rows.append(row)
    finally:
        p.kill()
        p.wait()
        fwd.kill()
        fwd.wait()
        os.close(info_r)
    follow = rows[1:]
    col = lambda k: [r[k] for r in follow if k in r]
    print(json.dumps({"first_turn_ms": round(rows[0]["delta"], 3)
                      if rows and "delta" in rows[0] else None,
                      "follow_ups": len(follow),
                      "follow_ms": dist(col("delta")),
                      "follow_init_ms": dist(col("init")),
                      "follow_line_ms": dist(col("line")),
                      "follow_stream_ms": dist(col("stream")),
                      "argv_args": len(floor_argv(bwrap_pid, scratch))}))


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
        cli_floor(int(args[0]), args[1], int(args[2]), args[3])
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
