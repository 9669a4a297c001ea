"""Process life cycle: signals and graceful shutdown, log reopening,
--create-admin, --check-config, --help/--version, migrations with two
instances, restarts, and the JSON log (DESIGN.md §7, §8, §9)."""

import datetime
import json
import os
import re
import signal
import socket
import threading
import time
import uuid

import pytest
import requests

from conftest import (JWT_SECRET, RFC3339_RE, assert_problem, corral_src,
                      login, register, run_corrald, sanitizer_lines,
                      unique_email)


# ------------------------------------------------------------------ signals

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_exits_zero_quickly(make_server, sig):
    srv = make_server()
    # An idle keep-alive connection must not hold the shutdown up.
    session = requests.Session()
    assert session.get(srv.url("/healthz"), timeout=5).status_code == 200
    t0 = time.monotonic()
    srv.send_signal(sig)
    rc = srv.wait(timeout=10)
    took = time.monotonic() - t0
    session.close()
    print(f"exit {rc} after {took:.2f} s")
    assert took < 3.0, f"idle shutdown took {took:.2f} s"
    srv.assert_clean_exit()  # exit status 0, no sanitizer report


def _connect_refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_graceful_shutdown_finishes_inflight_login(make_server):
    srv = make_server(env={"CORRAL_PBKDF2_ITERATIONS": "100000",
                           "CORRAL_PBKDF2_CPU_SHARE": "0.05",
                           "CORRAL_SHUTDOWN_GRACE_MS": "10000"})
    t0 = time.monotonic()
    user = register(srv, password="graceful-pw")
    one_hash = time.monotonic() - t0
    print(f"one hash takes {one_hash:.2f} s here")
    assert one_hash > 0.8, "calibration: a login must take long enough"

    result = {}

    def slow_login():
        try:
            result["resp"] = login(srv, user.email, "graceful-pw")
        except requests.RequestException as e:
            result["error"] = e
        result["done"] = time.monotonic()

    th = threading.Thread(target=slow_login)
    th.start()
    time.sleep(min(0.4, one_hash / 4))
    t_sig = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    refused_at = None
    while time.monotonic() - t_sig < 1.5:
        if _connect_refused(srv.port):
            refused_at = time.monotonic()
            break
        time.sleep(0.05)
    th.join(timeout=60)
    assert not th.is_alive()
    assert "error" not in result, f"in-flight login failed: {result}"
    r = result["resp"]
    assert r.status_code == 200, r.text
    assert r.json()["user"]["id"] == user.id
    assert refused_at is not None, "new connections still accepted"
    assert refused_at - t_sig < 1.0
    assert refused_at < result["done"], \
        "new connections must be refused while the login is still running"
    srv.wait(timeout=12)
    exited = time.monotonic()
    print(f"refused after {refused_at - t_sig:.2f} s, login done after "
          f"{result['done'] - t_sig:.2f} s, exit after {exited - t_sig:.2f} s")
    assert exited - t_sig < 10.0, "not within the shutdown grace"
    assert exited - result["done"] < 3.0
    srv.assert_clean_exit()  # exit status 0, no sanitizer report
    # The session the login issued was stored before the exit.
    assert srv.db.scalar("SELECT count(*) FROM refresh_tokens WHERE "
                         "user_id = %s", (user.id,)) == 2


def test_shutdown_grace_bounds_a_slow_request(make_server):
    srv = make_server(env={"CORRAL_PBKDF2_ITERATIONS": "100000",
                           "CORRAL_PBKDF2_CPU_SHARE": "0.02",
                           "CORRAL_SHUTDOWN_GRACE_MS": "500"})
    user_email = unique_email("grace")
    result = {}  # the registration's hash takes seconds at this share

    def slow_register():
        try:
            result["resp"] = srv.post("/auth/register",
                                      json={"email": user_email,
                                            "password": "slow-enough-1"},
                                      timeout=30)
        except requests.RequestException as e:
            result["error"] = e

    th = threading.Thread(target=slow_register)
    th.start()
    time.sleep(0.5)
    t_sig = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait(timeout=10)
    took = time.monotonic() - t_sig
    th.join(timeout=30)
    print(f"exit {rc} after {took:.2f} s; client saw {result}")
    assert took < 0.5 + 2.0, f"grace 0.5 s but exit after {took:.2f} s"
    srv.assert_clean_exit()  # exit status 0, no sanitizer report
    if "resp" in result:  # an answer, if any, is an orderly one
        assert result["resp"].status_code in (201, 503)


def test_sighup_reopens_log_file(make_server):
    srv = make_server(start=False)
    logfile = os.path.join(srv.data_dir, "corrald.log")
    srv.overrides["CORRAL_LOG_FILE"] = logfile
    srv.start()

    def wait_for(path, needle, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    if needle in f.read():
                        return True
            time.sleep(0.05)
        return False

    rid1 = "before-" + uuid.uuid4().hex
    requests.get(srv.url("/healthz"), headers={"X-Request-Id": rid1},
                 timeout=5)
    assert wait_for(logfile, rid1), "request not logged to CORRAL_LOG_FILE"
    rotated = logfile + ".1"
    os.rename(logfile, rotated)
    srv.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not os.path.exists(logfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    rid2 = "after-" + uuid.uuid4().hex
    r = requests.get(srv.url("/healthz"), headers={"X-Request-Id": rid2},
                     timeout=5)
    assert r.status_code == 200
    assert wait_for(logfile, rid2), "no new log file with new lines"
    with open(rotated, encoding="utf-8") as f:
        old = f.read()
    assert rid1 in old and rid2 not in old
    with open(logfile, encoding="utf-8") as f:
        new_lines = f.read().splitlines()
    assert new_lines
    for line in new_lines + old.splitlines():
        rec = json.loads(line)
        assert {"ts", "level", "msg"} <= set(rec)
    assert srv.alive(), "SIGHUP must not stop the server"


# ------------------------------------------------------------ command line

def one_shot_env(db=None, **extra):
    env = {"CORRAL_SCHEMA_DIR": os.path.join(corral_src(), "schema"),
           "CORRAL_PBKDF2_ITERATIONS": "20000"}
    if db is not None:
        env["CORRAL_DATABASE_URL"] = db.dsn
    env.update(extra)
    return env


def test_create_admin(make_server):
    db = make_server.new_database()
    p = run_corrald(["--create-admin", "boss@example.com"],
                    env=one_shot_env(db), input="admin-password-1\n")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "admin-password-1" not in p.stdout + p.stderr
    rows = db.query("SELECT role, disabled, password_hash FROM users WHERE"
                    " email = 'boss@example.com'")
    assert len(rows) == 1 and rows[0][0] == "admin" and rows[0][1] is False
    assert "admin-password-1" not in rows[0][2]
    srv = make_server(db=db)
    r = login(srv, "boss@example.com", "admin-password-1")
    assert r.status_code == 200, r.text
    assert r.json()["user"]["role"] == "admin"
    assert srv.get("/auth/me", token=r.json()["access_token"]) \
        .json()["role"] == "admin"
    assert_problem(login(srv, "boss@example.com", "wrong-password"), 401,
                   "invalid_credentials")


def test_create_admin_lowercases_email(make_server):
    db = make_server.new_database()
    p = run_corrald(["--create-admin", "Chief@Example.COM"],
                    env=one_shot_env(db), input="admin-password-2\n")
    assert p.returncode == 0, p.stdout + p.stderr
    srv = make_server(db=db)
    r = login(srv, "chief@example.com", "admin-password-2")
    assert r.status_code == 200, r.text
    assert r.json()["user"]["email"] == "chief@example.com"
    assert r.json()["user"]["role"] == "admin"


def test_create_admin_promotes_existing_user(make_server):
    srv = make_server()
    register(srv)  # the first user is the admin
    plain = register(srv)
    assert plain.role == "user"
    p = run_corrald(["--create-admin", plain.email],
                    env=one_shot_env(srv.db), input="promoted-pw-1\n")
    assert p.returncode == 0, p.stdout + p.stderr
    assert srv.db.scalar("SELECT count(*) FROM users WHERE email = %s",
                         (plain.email,)) == 1
    r = login(srv, plain.email, "promoted-pw-1")
    assert r.status_code == 200, r.text
    assert r.json()["user"]["role"] == "admin"
    assert r.json()["user"]["id"] == plain.id


@pytest.mark.parametrize("stdin", ["short\n", "", "\n"])
def test_create_admin_refuses_bad_password(make_server, stdin):
    db = make_server.new_database()
    p = run_corrald(["--create-admin", "nope@example.com"],
                    env=one_shot_env(db), input=stdin)
    assert p.returncode != 0
    assert (p.stdout + p.stderr).strip(), "a failure must say why"
    users = db.query("SELECT count(*) FROM information_schema.tables WHERE"
                     " table_name = 'users'")[0][0]
    if users:
        assert db.scalar("SELECT count(*) FROM users") == 0


def test_create_admin_without_database_fails(make_server):
    p = run_corrald(["--create-admin", "x@example.com"], env=one_shot_env(),
                    input="long-enough-pw\n")
    assert p.returncode != 0
    assert "database" in (p.stdout + p.stderr).lower()


SECRETS = {
    "CORRAL_DATABASE_URL":
        "postgresql://cfg_user:Sup3rS3cretPw@127.0.0.1:1/cfgdb",
    "CORRAL_REDIS_URL": "redis://:RedisPw-98765@127.0.0.1:1/0",
    "CORRAL_JWT_SECRET": "check-config-jwt-secret-abcdefghijklmnop",
    "CORRAL_SECRET_KEY": "ab" * 32,
    "CORRAL_MODEL_API_KEY": "sk-ant-model-key-should-stay-hidden",
}


def test_check_config_hides_secrets():
    p = run_corrald(["--check-config"], env={**SECRETS,
                                             "CORRAL_PG_POOL_SIZE": "7",
                                             "CORRAL_LISTEN":
                                             "127.0.0.1:18081"})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    for name, value in SECRETS.items():
        assert value not in out, f"{name} printed by --check-config"
    for part in ("Sup3rS3cretPw", "RedisPw-98765", "cfg_user"):
        assert part not in out
    assert re.search(r"^\s*database_url\b", p.stdout, re.M | re.I), p.stdout
    assert re.search(r"pg_pool_size\s*[=:]\s*7\b", p.stdout, re.I), p.stdout
    assert "18081" in p.stdout


@pytest.mark.parametrize("var,value,name", [
    ("CORRAL_PG_POOL_SIZE", "0", "pg_pool_size"),
    ("CORRAL_PG_POOL_SIZE", "many", "pg_pool_size"),
    ("CORRAL_PBKDF2_CPU_SHARE", "2", "pbkdf2_cpu_share"),
    ("CORRAL_ACCESS_TOKEN_TTL", "5", "access_token_ttl"),
    ("CORRAL_JWT_SECRET", "too-short", "jwt_secret"),
    ("CORRAL_LISTEN", "nonsense", "listen"),
])
def test_check_config_rejects_bad_values(var, value, name):
    p = run_corrald(["--check-config"], env={var: value})
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert name in out.lower().replace("corral_", ""), out


def test_config_file(tmp_path):
    cfg = tmp_path / "corral.conf"
    cfg.write_text("# a comment\npg_pool_size = 5\n"
                   'log_level = "debug"\n\n')
    p = run_corrald(["-c", str(cfg), "--check-config"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"pg_pool_size\s*[=:]\s*5\b", p.stdout), p.stdout
    assert re.search(r"log_level\s*[=:]\s*debug\b", p.stdout), p.stdout
    # The environment overrides the file.
    p = run_corrald(["-c", str(cfg), "--check-config"],
                    env={"CORRAL_PG_POOL_SIZE": "9"})
    assert p.returncode == 0
    assert re.search(r"pg_pool_size\s*[=:]\s*9\b", p.stdout), p.stdout


def test_config_file_unknown_key(tmp_path):
    cfg = tmp_path / "corral.conf"
    cfg.write_text("pg_pool_size = 5\nno_such_setting = 1\n")
    p = run_corrald(["-c", str(cfg), "--check-config"])
    assert p.returncode != 0
    assert "no_such_setting" in p.stdout + p.stderr


def test_config_file_missing(tmp_path):
    p = run_corrald(["-c", str(tmp_path / "absent.conf"), "--check-config"])
    assert p.returncode != 0
    assert "absent.conf" in p.stdout + p.stderr


def test_bad_config_refuses_to_serve(tmp_path):
    p = run_corrald([], env={"CORRAL_PG_POOL_SIZE": "0",
                             "CORRAL_LISTEN": "127.0.0.1:1"}, timeout=30)
    assert p.returncode != 0
    assert "pg_pool_size" in (p.stdout + p.stderr).lower()


def test_version_and_help():
    p = run_corrald(["--version"])
    assert p.returncode == 0, p.stderr
    assert re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr)
    p = run_corrald(["--help"])
    assert p.returncode == 0, p.stderr
    for flag in ("--check-config", "--create-admin", "--print-routes",
                 "--version", "-c"):
        assert flag in p.stdout, flag
    p = run_corrald(["--no-such-flag"])
    assert p.returncode != 0
    p = run_corrald(["stray-argument"])
    assert p.returncode != 0


# ------------------------------------------------------ migrations, restart

def schema_versions():
    versions = []
    for name in os.listdir(os.path.join(corral_src(), "schema")):
        m = re.match(r"^(\d+)_.*\.sql$", name)
        if m:
            versions.append(int(m.group(1)))
    assert versions, "no migrations in schema/"
    return sorted(versions)


def test_two_instances_migrate_one_database(make_server):
    db = make_server.new_database()
    a = make_server(db=db, start=False, name="twin-a")
    b = make_server(db=db, start=False, name="twin-b")
    a.spawn()
    b.spawn()
    for srv in (a, b):
        srv.wait_healthy()
    for srv in (a, b):
        srv.wait_ready()
    rows = db.query("SELECT version, count(*) FROM schema_migrations"
                    " GROUP BY version ORDER BY version")
    assert [int(v) for v, _ in rows] == schema_versions()
    assert all(c == 1 for _, c in rows), rows
    tables = {t for (t,) in db.query(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public'")}
    assert {"users", "refresh_tokens", "api_keys",
            "schema_migrations"} <= tables
    # Both serve the same data.
    user = register(a)
    r = login(b, user.email, user.password)
    assert r.status_code == 200, r.text
    assert b.get("/auth/me", token=user.access).status_code == 200


def test_restart_keeps_data_and_migrations(make_server):
    srv = make_server()
    user = register(srv)
    before = srv.db.query("SELECT version, applied_at FROM schema_migrations"
                          " ORDER BY version")
    assert srv.stop() == 0
    srv.assert_clean_exit()
    srv.start()
    after = srv.db.query("SELECT version, applied_at FROM schema_migrations"
                         " ORDER BY version")
    assert after == before, "migrations ran again"
    assert login(srv, user.email, user.password).status_code == 200
    assert srv.get("/auth/me", token=user.access).status_code == 200


def test_database_unreachable_at_start_fails(make_server):
    """A server whose database never answers exits non-zero with a message
    instead of serving."""
    srv = make_server(start=False)
    srv.overrides["CORRAL_DATABASE_URL"] = (
        "host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=1")
    srv.spawn()
    rc = srv.wait(timeout=60)
    srv.checked = True
    assert rc != 0
    log = srv.log_text()
    assert "database" in log.lower() or "connect" in log.lower(), log
    assert not sanitizer_lines(log), log


# ------------------------------------------------------------- JSON logs

def test_json_logs_carry_request_ids_and_no_secrets(make_server):
    srv = make_server(env={"CORRAL_LOG_LEVEL": "debug"})
    secrets = {JWT_SECRET}
    rid = "logcheck-" + uuid.uuid4().hex

    p1, p2 = "first-Secret-pw-" + uuid.uuid4().hex[:8], \
        "second-Secret-pw-" + uuid.uuid4().hex[:8]
    wrong = "wrong-Secret-pw-" + uuid.uuid4().hex[:8]
    secrets |= {p1, p2, wrong}
    user = register(srv, password=p1)
    secrets |= {user.access, user.refresh}
    assert login(srv, user.email, wrong).status_code == 401
    s2 = login(srv, user.email, p1).json()
    s3 = srv.post("/auth/refresh",
                  json={"refresh_token": s2["refresh_token"]},
                  headers={"X-Request-Id": rid}).json()
    secrets |= {s2["access_token"], s2["refresh_token"], s3["access_token"],
                s3["refresh_token"]}
    assert srv.post("/auth/refresh", json={"refresh_token":
                                           s2["refresh_token"]}
                    ).status_code == 401
    key = srv.post("/auth/api-keys", json={"name": "log"},
                   token=user.access).json()
    secrets.add(key["key"])
    secrets.add(key["key"][len(key["prefix"]):])
    assert srv.get("/auth/me", token=key["key"]).status_code == 200
    srv.get("/auth/me", params={"access_token": user.access})
    srv.get("/auth/api-keys", token=key["key"])
    srv.delete(f"/auth/api-keys/{key['id']}", token=user.access)
    srv.get("/auth/me", token=key["key"])
    half = "Malformed-Secret-" + uuid.uuid4().hex[:8]
    secrets.add(half)
    srv.post("/auth/login", data=('{"email":"a@b.co","password":"%s"' % half)
             .encode(), headers={"Content-Type": "application/json"})
    assert srv.post("/auth/password", json={"current_password": p1,
                                            "new_password": p2},
                    token=user.access).status_code == 204
    s4 = login(srv, user.email, p2).json()
    secrets |= {s4["access_token"], s4["refresh_token"]}
    srv.post("/auth/logout", json={"refresh_token": s4["refresh_token"]})
    # JWT signatures alone are secrets too.
    secrets |= {t.rsplit(".", 1)[1] for t in secrets if t.count(".") == 2}

    assert srv.stop() == 0
    srv.assert_clean_exit()
    text = srv.log_text()
    lines = text.splitlines()
    assert len(lines) >= 15
    request_lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            pytest.fail(f"log line is not JSON: {line!r}")
        assert isinstance(rec, dict), line
        assert RFC3339_RE.match(rec.get("ts", "")), line
        ts = datetime.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
        now = datetime.datetime.now(datetime.timezone.utc)
        assert abs((now - ts).total_seconds()) < 600
        assert rec.get("level") in ("debug", "info", "warn", "error"), line
        assert isinstance(rec.get("msg"), str) and rec["msg"], line
        if rec["msg"] == "request" or "status" in rec:
            assert rec.get("request_id"), f"request line without id: {line}"
            request_lines.append(rec)
    assert len(request_lines) >= 15, "each request is logged"
    assert rid in {rec["request_id"] for rec in request_lines}
    leaked = sorted(s for s in secrets if s and s in text)
    assert not leaked, f"secrets in the log: {leaked}"
