/* Command-line store operations (corrald --create-admin). They run
 * before any event loop exists, in a process that serves nothing, so the
 * blocking libpq calls here stall nobody. */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "corral/ids.h"
#include "corral/log.h"
#include "corral/store.h"

int store_create_admin_sync(const char *conninfo, const char *email,
                            const char *hash)
{
    char id[UUID_STR_LEN + 1];
    if (ids_uuid7(id) < 0)
        return -1;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        log_error("database: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    const char *p[] = {id, email, hash};
    PGresult *res = PQexecParams(
        c,
        "INSERT INTO users (id, email, password_hash, role) VALUES"
        " ($1, $2, $3, 'admin') ON CONFLICT (email) DO UPDATE SET"
        " role = 'admin', password_hash = EXCLUDED.password_hash,"
        " disabled = false, updated_at = now() RETURNING id",
        3, NULL, p, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : -1;
    if (rc < 0)
        log_error("create admin: %s", PQerrorMessage(c));
    else
        printf("admin %s: %s\n", email, PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return rc;
}
