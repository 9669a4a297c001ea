"""Shared fixtures of the corral integration suite.

The suite drives the real corrald binary over HTTP against a real
PostgreSQL (and Redis where a test asks for it). Everything it needs comes
from the environment that tools/test exports:

  CORRAL_BIN               the corrald binary under test
  CORRAL_SRC               the repository root (schema/ lives there)
  CORRAL_TEST_PG_URL       libpq URI of the `postgres` database of a test
                           cluster, as a superuser
  CORRAL_TEST_REDIS_URL    a Redis for the tests that use one
  CORRAL_TEST_PGDATA, CORRAL_TEST_PG_BIN, CORRAL_TEST_PG_PORT
                           the test cluster itself (test_pg_restart.py;
                           CORRAL_TEST_PG_LOG, when set, is its log file)
  CORRAL_TEST_SERVICE_USER the unprivileged user corrald and PostgreSQL run
                           as when the suite runs as root
  TMPDIR                   where data dirs and logs go (tools/test points
                           it at a directory the service user can reach)
  ASAN_OPTIONS, UBSAN_OPTIONS
                           kept as given; defaults keep reports in stderr

A missing variable is a test failure, never a skip.

Every server a test starts gets its own database (dropped afterwards), its
own data directory and its own stderr capture. When a server stops, its
exit status must be 0 and its stderr must hold no sanitizer report; a test
that leaves a report behind fails. On a failing test the tail of each
server log it used is attached to the report.
"""

import base64
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import psycopg2
import psycopg2.extensions
import pytest
import requests

API = "/api/v1"

# A known JWT secret, so tests can forge tokens: the HMAC key is
# SHA-256(secret) when CORRAL_JWT_SECRET is set.
JWT_SECRET = "integration-test-jwt-secret-0123456789abcdef"
JWT_KEY = hashlib.sha256(JWT_SECRET.encode()).digest()

FAST_ITERATIONS = "20000"

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "ERROR: MemorySanitizer",
)

UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# ---------------------------------------------------------------- environment

def require_env(name):
    """The value of a variable the suite cannot run without."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"required environment variable {name} is not set "
                    f"(tools/test exports it)", pytrace=False)
    return value


def service_user():
    """The user corrald drops to (and PostgreSQL runs as) when we are root;
    None when the suite runs unprivileged."""
    if os.geteuid() != 0:
        return None
    return require_env("CORRAL_TEST_SERVICE_USER")


def chown_to_service_user(path):
    user = service_user()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corral_bin():
    path = require_env("CORRAL_BIN")
    if not os.access(path, os.X_OK):
        pytest.fail(f"CORRAL_BIN is not an executable file: {path}",
                    pytrace=False)
    return path


def corral_src():
    path = require_env("CORRAL_SRC")
    if not os.path.isdir(os.path.join(path, "schema")):
        pytest.fail(f"CORRAL_SRC has no schema/ directory: {path}",
                    pytrace=False)
    return path


def base_env():
    """os.environ without any CORRAL_* variable (tests set what they mean),
    plus sanitizer options that keep reports in stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    if os.environ.get("CORRAL_SNAPSHOT"):  # the checkpoint helper
        env["CORRAL_SNAPSHOT_PATH"] = os.environ["CORRAL_SNAPSHOT"]
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


def sanitizer_lines(text):
    return [line for line in text.splitlines()
            if any(p in line for p in SANITIZER_PATTERNS)]


# ------------------------------------------------------------------ databases

class Database:
    """One database of the test cluster, created fresh for a server."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.dsn = cluster.dsn_for(name)

    def connect(self):
        conn = psycopg2.connect(self.dsn, connect_timeout=10)
        conn.autocommit = True
        return conn

    def query(self, sql, params=None):
        """Rows of one statement (an empty list for statements without)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def scalar(self, sql, params=None):
        rows = self.query(sql, params)
        assert len(rows) == 1, f"expected one row from {sql!r}, got {rows}"
        return rows[0][0]


class Cluster:
    """The PostgreSQL test cluster named by CORRAL_TEST_PG_URL."""

    def __init__(self, admin_url):
        self.admin_url = admin_url
        self.params = psycopg2.extensions.parse_dsn(admin_url)

    def dsn_for(self, dbname):
        params = dict(self.params)
        params["dbname"] = dbname
        return psycopg2.extensions.make_dsn(**params)

    def _admin(self):
        conn = psycopg2.connect(self.admin_url, connect_timeout=10)
        conn.autocommit = True
        return conn

    def create_database(self):
        name = "corral_t_" + uuid.uuid4().hex[:16]
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return Database(self, name)

    def drop_database(self, db):
        conn = None
        for _ in range(20):  # the cluster may be restarting (pg restart test)
            try:
                conn = self._admin()
                break
            except psycopg2.OperationalError:
                time.sleep(0.5)
        if conn is None:
            return
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM "
                            "pg_stat_activity WHERE datname = %s",
                            (db.name,))
                cur.execute(f'DROP DATABASE IF EXISTS "{db.name}"')
        finally:
            conn.close()


# --------------------------------------------------------------------- server

# Servers a test touched, for the log tails of a failing test.
_TEST_SERVERS = []


class ServerError(Exception):
    pass


class Server:
    """One corrald process with its own port, data dir, database and log.

    env: CORRAL_* overrides; a value of None removes the default."""

    _seq = 0

    def __init__(self, db, env=None, name=None, logdir=None):
        Server._seq += 1
        self.name = name or f"srv{Server._seq}"
        self.db = db
        self.overrides = dict(env or {})
        self.logdir = logdir or tempfile.mkdtemp(prefix="corral-it-log-")
        self.data_dir = tempfile.mkdtemp(prefix="corral-it-data-")
        os.chmod(self.data_dir, 0o755)
        chown_to_service_user(self.data_dir)
        self.stderr_path = os.path.join(self.logdir, f"{self.name}.stderr")
        self.stdout_path = os.path.join(self.logdir, f"{self.name}.stdout")
        self.proc = None
        self.port = None
        self.returncode = None
        self.checked = False
        self.stopping = False
        self._files = []

    # -- configuration

    def environment(self):
        env = base_env()
        defaults = {
            "CORRAL_LISTEN": f"127.0.0.1:{self.port}",
            "CORRAL_DATABASE_URL": self.db.dsn if self.db else None,
            "CORRAL_DATA_DIR": self.data_dir,
            "CORRAL_SCHEMA_DIR": os.path.join(corral_src(), "schema"),
            "CORRAL_LOG_LEVEL": "info",
            "CORRAL_PBKDF2_ITERATIONS": FAST_ITERATIONS,
            "CORRAL_JWT_SECRET": JWT_SECRET,
            # Most tests share one client IP: the limits get their own tests.
            "CORRAL_RATE_AUTH_IP_PER_MIN": "1000000",
            "CORRAL_RATE_AUTH_ACCOUNT_PER_MIN": "1000000",
        }
        user = service_user()
        if user:
            defaults["CORRAL_USER"] = user
        defaults.update(self.overrides)
        for key, value in defaults.items():
            if value is not None:
                env[key] = str(value)
        return env

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def api_url(self, path):
        return self.base + API + path

    # -- process

    def spawn(self):
        """Starts the process without waiting for it."""
        if self.port is None:
            self.port = free_port()
        err = open(self.stderr_path, "ab")
        out = open(self.stdout_path, "ab")
        self._files = [err, out]
        self.proc = subprocess.Popen(
            [corral_bin()], cwd=corral_src(), env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True)
        self.returncode = None
        self.checked = False
        self.stopping = False
        if self not in _TEST_SERVERS:
            _TEST_SERVERS.append(self)
        return self

    def start(self, timeout=60, ready=True):
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_healthy(timeout)
                break
            except ServerError:
                if (self.proc.poll() is not None and attempt < 2 and
                        "cannot listen" in self.log_text()):
                    self.port = free_port()  # lost the port race: retry
                    continue
                raise
        if ready:
            self.wait_ready(timeout)
        return self

    def wait_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"corrald {self.name} exited with {self.proc.returncode} "
                    f"during start-up:\n{self.log_tail()}")
            try:
                r = requests.get(self.url("/healthz"), timeout=2)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise ServerError(f"corrald {self.name} not healthy after {timeout}s:"
                          f"\n{self.log_tail()}")

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"corrald {self.name} exited with {self.proc.returncode}:"
                    f"\n{self.log_tail()}")
            try:
                last = requests.get(self.url("/readyz"), timeout=2)
                if last.status_code == 200:
                    return
            except requests.RequestException as e:
                last = e
            time.sleep(0.05)
        raise ServerError(f"corrald {self.name} not ready after {timeout}s "
                          f"(last: {last}):\n{self.log_tail()}")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Waits for the exit; returns the status (raises on timeout)."""
        self.returncode = self.proc.wait(timeout=timeout)
        self._close_files()
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signals and waits; returns the exit status. A server that does
        not exit in time is killed and reported as a failure status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                # A second SIGTERM would find the default disposition back
                # in place while the process exits: signal only once.
                if not self.stopping:
                    self.send_signal(sig)
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = f"did not exit within {timeout}s of {sig!r}"
        else:
            self.returncode = self.proc.returncode
        self._close_files()
        return self.returncode

    def _close_files(self):
        for f in self._files:
            f.close()
        self._files = []

    def problems(self):
        """What is wrong with a stopped server: a non-zero exit or
        sanitizer reports (empty list: clean)."""
        issues = []
        if self.returncode not in (0, None):
            issues.append(f"corrald {self.name} exit status: "
                          f"{self.returncode}")
        lines = sanitizer_lines(self.log_text())
        if lines:
            issues.append(f"corrald {self.name} sanitizer report:\n" +
                          "\n".join(lines[:20]))
        return issues

    def assert_clean_exit(self):
        self.checked = True
        issues = self.problems()
        assert not issues, "\n".join(issues) + "\n" + self.log_tail()

    def cleanup(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_files()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- logs

    def log_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return self.log_text().splitlines()

    def log_tail(self, n=60):
        lines = self.log_lines()
        return (f"--- last {min(n, len(lines))} stderr lines of corrald "
                f"{self.name} ---\n" + "\n".join(lines[-n:]))

    # -- HTTP

    def request(self, method, path, token=None, api=True, timeout=30,
                headers=None, **kw):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        url = self.api_url(path) if api else self.url(path)
        return requests.request(method, url, headers=hdrs, timeout=timeout,
                                **kw)

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token=token, **kw)

    def post(self, path, json=None, token=None, **kw):
        return self.request("POST", path, token=token, json=json, **kw)

    def delete(self, path, token=None, **kw):
        return self.request("DELETE", path, token=token, **kw)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def cluster():
    url = require_env("CORRAL_TEST_PG_URL")
    corral_bin()
    corral_src()
    service_user()
    c = Cluster(url)
    try:
        conn = c._admin()
        conn.close()
    except psycopg2.Error as e:
        pytest.fail(f"cannot connect to CORRAL_TEST_PG_URL: {e}",
                    pytrace=False)
    return c


@pytest.fixture(scope="session")
def logdir():
    d = tempfile.mkdtemp(prefix="corral-it-logs-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def serve(cluster, logdir, name, env=None):
    """A corrald on a database of its own, for a fixture to yield from;
    when it stops, a sanitizer report or an unclean exit fails the
    fixture, and the database is dropped."""
    db = cluster.create_database()
    srv = Server(db, name=name, logdir=logdir, env=env)
    try:
        srv.start()
        yield srv
        srv.stop()
        issues = srv.problems()
        assert not issues, "\n".join(issues) + "\n" + srv.log_tail()
    finally:
        srv.cleanup()
        cluster.drop_database(db)


@pytest.fixture(scope="session")
def _session_server(cluster, logdir):
    yield from serve(cluster, logdir, "shared",
                     {"CORRAL_ACCESS_TOKEN_TTL": "600"})


@pytest.fixture
def server(_session_server):
    """The shared server (20k PBKDF2 iterations, JWT_SECRET, high rate
    limits, access token TTL 600 s). After each test it must still be
    running and its log must hold no new sanitizer report."""
    srv = _session_server
    _TEST_SERVERS.append(srv)
    before = len(sanitizer_lines(srv.log_text()))
    yield srv
    assert srv.alive(), (f"the shared corrald died during the test:\n"
                         f"{srv.log_tail()}")
    new = sanitizer_lines(srv.log_text())[before:]
    assert not new, "sanitizer report:\n" + "\n".join(new)


@pytest.fixture
def make_server(cluster, logdir):
    """Factory: make_server(env=None, db=None, start=True, ready=True).
    Each server gets a fresh database unless db is given. At teardown every
    server is stopped (SIGTERM) and must exit 0 without sanitizer reports;
    the databases are dropped."""
    servers, dbs = [], []

    def make(env=None, db=None, start=True, ready=True, name=None):
        if db is None:
            db = cluster.create_database()
            dbs.append(db)
        srv = Server(db, env=env, logdir=logdir, name=name)
        servers.append(srv)
        if start:
            srv.start(ready=ready)
        return srv

    def new_database():
        db = cluster.create_database()
        dbs.append(db)
        return db

    make.new_database = new_database
    yield make
    issues = []
    try:
        for srv in servers:
            if srv.proc is None:
                continue
            if srv.alive():
                srv.stop()
            if not srv.checked:
                found = srv.problems()
                if found:
                    issues.extend(found)
                    issues.append(srv.log_tail())
    finally:
        for srv in servers:
            srv.cleanup()
        for db in dbs:
            cluster.drop_database(db)
    assert not issues, "\n".join(issues)


@pytest.fixture(autouse=True)
def _track_servers():
    _TEST_SERVERS.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in list(_TEST_SERVERS):
            rep.sections.append((f"corrald {srv.name} log", srv.log_tail()))


# ------------------------------------------------------------------ helpers

def unique_email(tag="u"):
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


class User:
    def __init__(self, email, password, body):
        self.email = email
        self.password = password
        self.update(body)

    def update(self, body):
        self.body = body
        self.id = body["user"]["id"]
        self.role = body["user"]["role"]
        self.access = body["access_token"]
        self.refresh = body["refresh_token"]


def register(srv, email=None, password=None, display_name=None,
             expect=201):
    email = email or unique_email()
    password = password or "pw-" + uuid.uuid4().hex[:12]
    payload = {"email": email, "password": password}
    if display_name is not None:
        payload["display_name"] = display_name
    r = srv.post("/auth/register", json=payload)
    assert r.status_code == expect, (r.status_code, r.text)
    return User(email.lower(), password, r.json()) if expect == 201 else r


def login(srv, email, password):
    return srv.post("/auth/login", json={"email": email,
                                         "password": password})


def assert_problem(resp, status, code=None, request_id=True):
    """Checks an RFC 9457 answer and returns its body. request_id=False
    leaves the X-Request-Id check to the test dedicated to it."""
    assert resp.status_code == status, \
        f"expected {status} {code}, got {resp.status_code}: {resp.text}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", \
        f"Content-Type {ctype!r}"
    body = resp.json()
    for key in ("type", "title", "status", "detail", "code"):
        assert key in body, f"problem body lacks {key}: {body}"
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert isinstance(body["type"], str) and body["type"]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", body["code"]), body
    if code is not None:
        assert body["code"] == code, \
            f"expected code {code}, got {body['code']}: {body}"
    if request_id:
        assert resp.headers.get("X-Request-Id"), "no X-Request-Id"
    return body


def assert_retry_after(resp):
    value = resp.headers.get("Retry-After")
    assert value is not None, f"no Retry-After on {resp.status_code}"
    assert re.fullmatch(r"\d+", value), f"Retry-After {value!r}"
    assert int(value) >= 1, f"Retry-After {value!r}"
    return int(value)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, key=JWT_KEY, header=None, alg="HS256"):
    """A JWT with the given claims; alg picks the MAC actually used
    (HS256, HS512 or none), header overrides the header object."""
    header = header or {"alg": alg, "typ": "JWT"}
    signing_input = (b64url(json.dumps(header, separators=(",", ":"))
                            .encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":"))
                            .encode()))
    if alg == "none":
        sig = b""
    else:
        digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
        sig = hmac.new(key, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


def run_corrald(args, env=None, input=None, timeout=60):
    """Runs corrald for a one-shot command; returns CompletedProcess."""
    full = base_env()
    full.update(env or {})
    return subprocess.run([corral_bin(), *args], cwd=corral_src(), env=full,
                          input=input, capture_output=True, text=True,
                          timeout=timeout)
