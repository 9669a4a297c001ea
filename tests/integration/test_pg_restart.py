"""PostgreSQL restarting under a running server.

The test stops the shared test cluster (pg_ctl -m fast), so it lives in its
own module, uses its own database, and always starts the cluster again,
whatever happens."""

import os
import shlex
import shutil
import subprocess
import tempfile
import time

import psycopg2
import pytest
import requests

from conftest import (assert_problem, chown_to_service_user, register,
                      require_env, service_user)


class PgCtl:
    def __init__(self):
        self.pgdata = require_env("CORRAL_TEST_PGDATA")
        self.port = require_env("CORRAL_TEST_PG_PORT")
        binv = require_env("CORRAL_TEST_PG_BIN")
        if os.path.isdir(binv):
            self.pg_ctl = os.path.join(binv, "pg_ctl")
        elif os.path.basename(binv) == "pg_ctl":
            self.pg_ctl = binv
        else:
            self.pg_ctl = os.path.join(os.path.dirname(binv), "pg_ctl")
        if not os.access(self.pg_ctl, os.X_OK):
            pytest.fail(f"no pg_ctl from CORRAL_TEST_PG_BIN={binv}",
                        pytrace=False)
        self.user = service_user()
        self.workdir = tempfile.mkdtemp(prefix="corral-it-pgctl-")
        os.chmod(self.workdir, 0o755)
        chown_to_service_user(self.workdir)
        self.opts = self._start_options()

    def _start_options(self):
        """The postgres options the cluster runs with now (postmaster.opts,
        what `pg_ctl restart` would reuse), minus -D; plus the port."""
        args = []
        try:
            with open(os.path.join(self.pgdata, "postmaster.opts")) as f:
                args = shlex.split(f.read())[1:]
        except FileNotFoundError:
            pass
        opts, skip = [], False
        for a in args:
            if skip:
                skip = False
                continue
            if a == "-D":
                skip = True
                continue
            if a.startswith("-D") and len(a) > 2:
                continue
            opts.append(a)
        if "-p" not in opts and not any(o.startswith("port=") for o in opts):
            opts += ["-p", self.port]
        return shlex.join(opts)

    def _run(self, *args, timeout=90):
        cmd = [self.pg_ctl, *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # Output to a file: the postmaster must not inherit a pipe of ours.
        with open(os.path.join(self.workdir, "pg_ctl.out"), "ab") as out:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=timeout,
                               cwd=self.workdir)
        return p.returncode

    def output(self):
        try:
            with open(os.path.join(self.workdir, "pg_ctl.out")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        rc = self._run("stop", "-D", self.pgdata, "-m", "fast", "-w",
                       "-t", "60")
        assert rc == 0, f"pg_ctl stop failed:\n{self.output()}"

    def start(self):
        # The cluster's own log (CORRAL_TEST_PG_LOG) when tools/test names
        # it, else one of ours.
        log = (os.environ.get("CORRAL_TEST_PG_LOG") or
               os.path.join(self.workdir, "postgres.log"))
        return self._run("start", "-D", self.pgdata, "-w", "-t", "60",
                         "-l", log, "-o", self.opts)

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def test_postgres_restart_while_serving(make_server, server, cluster):
    pg = PgCtl()
    srv = make_server()
    user = register(srv)
    assert srv.get("/auth/me", token=user.access).status_code == 200
    stopped = False
    outage_emails = []
    try:
        pg.stop()
        stopped = True
        t_down = time.monotonic()
        for round_ in range(5):
            h, dt = timed(lambda: requests.get(srv.url("/healthz"),
                                               timeout=10))
            assert h.status_code == 200 and dt < 2.0, (h.status_code, dt)
            r, dt = timed(lambda: requests.get(srv.url("/readyz"),
                                               timeout=10))
            print(f"round {round_}: /readyz {r.status_code} in {dt:.3f} s")
            assert r.status_code == 503, r.text
            assert dt < 2.0, f"/readyz took {dt:.2f} s"
            assert r.json()["postgres"] != "ok"
            r, dt = timed(lambda: srv.get("/auth/me", token=user.access,
                                          timeout=10))
            print(f"round {round_}: /auth/me {r.status_code} in {dt:.3f} s")
            assert_problem(r, 503, "db_unavailable")
            assert dt < 2.0, f"/auth/me took {dt:.2f} s"
            r, dt = timed(lambda: srv.post(
                "/auth/login", json={"email": user.email,
                                     "password": user.password},
                timeout=10))
            assert_problem(r, 503, "db_unavailable")
            assert dt < 2.0, f"login took {dt:.2f} s"
            email = f"outage-{round_}-{user.id[:8]}@example.com"
            r, dt = timed(lambda: srv.post(
                "/auth/register", json={"email": email,
                                        "password": "outage-pw-1"},
                timeout=10))
            assert_problem(r, 503, "db_unavailable")
            assert dt < 2.0, f"register took {dt:.2f} s"
            outage_emails.append(email)
            time.sleep(0.3)
        print(f"outage observed for {time.monotonic() - t_down:.1f} s")

        rc = pg.start()
        assert rc == 0, f"pg_ctl start failed:\n{pg.output()}"
        stopped = False
        t_up = time.monotonic()
        recovered = None
        while time.monotonic() - t_up < 15:
            try:
                ready = requests.get(srv.url("/readyz"), timeout=5)
                me = srv.get("/auth/me", token=user.access, timeout=5)
                if ready.status_code == 200 and me.status_code == 200:
                    recovered = time.monotonic() - t_up
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert recovered is not None, "no recovery within 15 s of the restart"
        print(f"recovered {recovered:.2f} s after the restart")
        assert srv.get("/auth/me", token=user.access).json()["id"] == user.id
        # Nothing half-done from the outage, and writes work again.
        assert srv.db.scalar("SELECT count(*) FROM users WHERE email ="
                             " ANY(%s)", (outage_emails,)) == 0
        other = register(srv)
        assert srv.get("/auth/me", token=other.access).status_code == 200
        # So does the shared server, which saw the same outage.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if requests.get(server.url("/readyz"), timeout=5).status_code \
                    == 200:
                break
            time.sleep(0.2)
        assert requests.get(server.url("/readyz"), timeout=5).status_code \
            == 200
        register(server)
    finally:
        if stopped:
            pg.start()
        try:
            psycopg2.connect(cluster.admin_url, connect_timeout=10).close()
        finally:
            pg.cleanup()
