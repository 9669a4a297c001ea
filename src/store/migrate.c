/* migrate: applies schema/NNNN_name.sql files at start-up.
 *
 * Blocking libpq (PQconnectdb, PQexec) is deliberate and allowed only here:
 * migrate_run() is called once before the event loop starts, so there is
 * no loop to stall, and a straight-line sequence of statements is far
 * easier to get right than a state machine. Nothing called from the loop
 * may do this (DESIGN.md §2).
 *
 * Each file runs in its own transaction together with its schema_migrations
 * row, so a failing file leaves no trace. Files therefore must not contain
 * transaction control (BEGIN/COMMIT), statements that refuse to run in a
 * transaction (CREATE INDEX CONCURRENTLY, VACUUM) or COPY FROM STDIN. The
 * text is sent with PQexec as a multi-statement script: it is trusted
 * repository content, not user input. */
#include "corral/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "corral/log.h"
#include "corral/mem.h"

#define MIGRATE_MAX_FILE_BYTES (1024 * 1024)
#define MIGRATE_MAX_VERSION 9999 /* four digits */

/* Session-level advisory lock key shared by every corral instance:
 * "corralmg" read as a big-endian int64. */
#define MIGRATE_LOCK_KEY "7165071367756082535"

struct migrate_file {
    int version;
    char *name; /* the file name, e.g. "0001_init.sql"; owned */
};

struct migrate_list {
    struct migrate_file *v;
    size_t n;
    size_t cap;
};

/* ---- the directory ------------------------------------------------------ */

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* ASCII only, whatever the locale: [A-Za-z0-9_]. */
static bool is_word(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'z') ||
           (ch >= 'A' && ch <= 'Z') || ch == '_';
}

/* The version of a name matching ^[0-9]{4}_[A-Za-z0-9_]+\.sql$, else -1. */
static int migrate_name_version(const char *name)
{
    size_t n = strlen(name);
    if (n < 4 + 1 + 1 + 4 || strcmp(name + n - 4, ".sql") != 0 ||
        name[4] != '_')
        return -1;
    for (size_t i = 0; i < 4; i++)
        if (!is_digit(name[i]))
            return -1;
    for (size_t i = 5; i < n - 4; i++)
        if (!is_word(name[i]))
            return -1;
    return (name[0] - '0') * 1000 + (name[1] - '0') * 100 +
           (name[2] - '0') * 10 + (name[3] - '0');
}

static void migrate_list_free(struct migrate_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    *l = (struct migrate_list){0};
}

static int migrate_file_cmp(const void *a, const void *b)
{
    const struct migrate_file *x = a, *y = b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Fills l with the migration files of dir, sorted by version. Two files
 * with one version are an error: which one ran would depend on luck. */
static int migrate_scan(const char *dir, struct migrate_list *l)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_error("migrate: cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int version = migrate_name_version(e->d_name);
        if (version < 0)
            continue;
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 16;
            l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
        }
        l->v[l->n].version = version;
        l->v[l->n].name = xstrdup(e->d_name);
        l->n++;
    }
    closedir(d);
    if (l->n > 0)
        qsort(l->v, l->n, sizeof(*l->v), migrate_file_cmp);
    for (size_t i = 1; i < l->n; i++) {
        if (l->v[i].version == l->v[i - 1].version) {
            log_error("migrate: %s and %s share version %d", l->v[i - 1].name,
                      l->v[i].name, l->v[i].version);
            return -1;
        }
    }
    return 0;
}

/* Reads dir/name into a NUL-terminated string owned by the caller. A NUL
 * byte inside would silently truncate the script, so it is refused. */
static char *migrate_read(const char *dir, const char *name)
{
    size_t plen = strlen(dir) + 1 + strlen(name) + 1;
    char *path = xmalloc(plen);
    snprintf(path, plen, "%s/%s", dir, name);
    char *text = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        log_error("migrate: cannot read %s: %s", name, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > MIGRATE_MAX_FILE_BYTES) {
        log_error("migrate: %s is not a regular file of at most %d bytes", name,
                  MIGRATE_MAX_FILE_BYTES);
        goto fail;
    }
    size_t size = (size_t)st.st_size, got = 0;
    text = xmalloc(size + 1);
    while (got < size) {
        ssize_t k = read(fd, text + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            log_error("migrate: cannot read %s: %s", name,
                      k < 0 ? strerror(errno) : "file shrank");
            goto fail;
        }
        got += (size_t)k;
    }
    text[size] = '\0';
    if (memchr(text, '\0', size)) {
        log_error("migrate: %s contains a NUL byte", name);
        goto fail;
    }
    close(fd);
    free(path);
    return text;
fail:
    if (fd >= 0)
        close(fd);
    free(text);
    free(path);
    return NULL;
}

/* ---- the database ------------------------------------------------------- */

/* "relation ... already exists, skipping" and friends: not for stderr. */
static void migrate_on_notice(void *arg, const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        n--;
    log_debug("migrate: server notice: %.*s", (int)n, msg);
}

static bool migrate_res_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res); /* FATAL_ERROR for NULL */
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
           st == PGRES_EMPTY_QUERY;
}

/* Logs what failed with the server's message and SQLSTATE. */
static void migrate_log_failure(PGconn *db, const PGresult *res,
                                const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg =
        res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(db);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        n--;
    log_error("migrate: %s failed: %.*s (SQLSTATE %s)", what, (int)n, msg,
              state ? state : "none");
}

/* One statement with text parameters; 0, or -1 after logging. */
static int migrate_exec(PGconn *db, const char *what, const char *sql,
                        int nparams, const char *const *params)
{
    PGresult *res = PQexecParams(db, sql, nparams, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (!migrate_res_ok(res)) {
        migrate_log_failure(db, res, what);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* Marks done[version] for every recorded version. */
static int migrate_load_applied(PGconn *db, bool *done)
{
    PGresult *res = PQexecParams(db, "SELECT version FROM schema_migrations", 0,
                                 NULL, NULL, NULL, NULL, 0);
    if (!migrate_res_ok(res)) {
        migrate_log_failure(db, res, "reading schema_migrations");
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        long v = strtol(PQgetvalue(res, i, 0), NULL, 10);
        if (v >= 0 && v <= MIGRATE_MAX_VERSION)
            done[v] = true;
    }
    PQclear(res);
    return 0;
}

/* BEGIN; the script; its schema_migrations row; COMMIT. Anything failing
 * rolls the whole file back. */
static int migrate_apply(PGconn *db, const char *dir,
                         const struct migrate_file *f)
{
    char *sql = migrate_read(dir, f->name);
    if (!sql)
        return -1;
    char version[16], what[512];
    snprintf(version, sizeof(version), "%d", f->version);
    snprintf(what, sizeof(what), "recording %s", f->name);
    const char *params[] = {version, f->name};
    int rc = -1;

    if (migrate_exec(db, "BEGIN", "BEGIN", 0, NULL) != 0)
        goto out;
    PGresult *res = PQexec(db, sql);
    bool ok = migrate_res_ok(res);
    if (!ok)
        migrate_log_failure(db, res, f->name);
    PQclear(res);
    if (!ok)
        goto rollback;
    if (PQtransactionStatus(db) != PQTRANS_INTRANS) {
        log_error("migrate: %s ended the transaction itself (no BEGIN, "
                  "COMMIT or ROLLBACK in migration files)",
                  f->name);
        goto rollback;
    }
    if (migrate_exec(db, what,
                     "INSERT INTO schema_migrations (version, name) "
                     "VALUES ($1::int, $2)",
                     2, params) != 0 ||
        migrate_exec(db, "COMMIT", "COMMIT", 0, NULL) != 0)
        goto rollback;
    log_info("migrate: applied %s", f->name);
    rc = 0;
    goto out;
rollback:
    PQclear(PQexec(db, "ROLLBACK"));
out:
    free(sql);
    return rc;
}

int migrate_run(const char *conninfo, const char *dir)
{
    static const char *const key[] = {MIGRATE_LOCK_KEY};
    struct migrate_list files = {0};
    bool *done = NULL, locked = false;
    int applied = 0, rc = -1;
    PGconn *db = NULL;

    if (migrate_scan(dir, &files) != 0)
        goto out;
    db = PQconnectdb(conninfo);
    if (PQstatus(db) != CONNECTION_OK) {
        migrate_log_failure(db, NULL, "connecting to the database");
        goto out;
    }
    PQsetNoticeProcessor(db, migrate_on_notice, NULL);
    /* Blocks while another instance migrates; the versions it applied
     * are then read below and skipped. */
    if (migrate_exec(db, "taking the migration lock",
                     "SELECT pg_advisory_lock($1::bigint)", 1, key) != 0)
        goto out;
    locked = true;
    if (migrate_exec(db, "creating schema_migrations",
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version int PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())",
                     0, NULL) != 0)
        goto out;
    done = xcalloc(MIGRATE_MAX_VERSION + 1, sizeof(*done));
    if (migrate_load_applied(db, done) != 0)
        goto out;
    for (size_t i = 0; i < files.n; i++) {
        if (done[files.v[i].version])
            continue;
        if (migrate_apply(db, dir, &files.v[i]) != 0)
            goto out;
        applied++;
    }
    rc = applied;
out:
    if (locked)
        PQclear(PQexecParams(db, "SELECT pg_advisory_unlock($1::bigint)", 1,
                             NULL, key, NULL, NULL, 0));
    PQfinish(db);
    free(done);
    migrate_list_free(&files);
    return rc;
}
