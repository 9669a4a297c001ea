/* migrate: applies schema/NNNN_name.sql files in numeric order at start-up.
 * Runs before the event loop starts (blocking libpq is acceptable there and
 * nowhere else). Each file runs inside its own transaction together with
 * its row in schema_migrations(version, name, applied_at); a session-level
 * advisory lock serialises concurrent start-up of several instances, and
 * already-applied versions are skipped, so the whole thing is idempotent. */
#ifndef CORRAL_MIGRATE_H
#define CORRAL_MIGRATE_H

/* conninfo: libpq string or URI; dir: the folder holding NNNN_*.sql.
 * Returns the number of migrations applied (>= 0), or -1 after logging the
 * failing file and the server's error. */
int migrate_run(const char *conninfo, const char *dir)
    __attribute__((warn_unused_result));

#endif
