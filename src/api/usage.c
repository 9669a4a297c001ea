/* GET /usage (API.md "Settings, usage, models"): the caller's ledger, or
 * for an admin any user's, summed over [from, to) and optionally grouped
 * by UTC day, model or chat. The range is parsed and checked here, then
 * passed on as normalised UTC text, so PostgreSQL's lenient date parser
 * never decides what a malformed value means. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "corral/api.h"
#include "corral/ids.h"
#include "corral/server.h"
#include "corral/store_usage.h"

#define USAGE_MAX_DAYS 366
#define US_PER_S 1000000LL
#define TS_TEXT 96 /* room for any int the format could print */

/* A point in time, UTC: seconds since the epoch and microseconds. */
struct usage_ts {
    int64_t sec;
    int32_t usec;
};

static int64_t ts_us(const struct usage_ts *t)
{
    return t->sec * US_PER_S + t->usec;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* n decimal digits at s into *out; false if any is not a digit. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* "HH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" after a date; the fraction is
 * cut to microseconds (the database's resolution). A '+' sent unencoded
 * in a query string arrives as a space, which is taken for '+'. */
static bool parse_clock(const char *s, struct usage_ts *t)
{
    int hh, mi, ss, oh = 0, om = 0, sign = 0;
    if (!digits(s, 2, &hh) || s[2] != ':' || !digits(s + 3, 2, &mi) ||
        s[5] != ':' || !digits(s + 6, 2, &ss) || hh > 23 || mi > 59 ||
        ss > 59)
        return false;
    s += 8;
    if (*s == '.') {
        int n = 0;
        for (s++; *s >= '0' && *s <= '9'; s++, n++)
            if (n < 6)
                t->usec = t->usec * 10 + (*s - '0');
        if (n < 1 || n > 9)
            return false;
        for (; n < 6; n++)
            t->usec *= 10;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == ' ' || *s == '-') {
        sign = *s == '-' ? -1 : 1;
        if (!digits(s + 1, 2, &oh) || s[3] != ':' || !digits(s + 4, 2, &om) ||
            oh > 23 || om > 59)
            return false;
        s += 6;
    } else {
        return false;
    }
    t->sec += hh * 3600 + mi * 60 + ss - sign * (oh * 3600 + om * 60);
    return *s == '\0';
}

/* "YYYY-MM-DD" (midnight UTC) or an RFC 3339 date-time. */
static bool parse_time(const char *s, struct usage_ts *t)
{
    int y, m, d;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &m) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || y < 1 || m < 1 || m > 12 ||
        d < 1 || d > days_in_month(y, m))
        return false;
    t->sec = days_from_civil(y, m, d) * 86400;
    t->usec = 0;
    if (s[10] == '\0')
        return true;
    if (s[10] != 'T' && s[10] != 't')
        return false;
    return parse_clock(s + 11, t);
}

static void format_time(const struct usage_ts *t, char out[TS_TEXT])
{
    time_t secs = (time_t)t->sec;
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, TS_TEXT, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)t->usec);
}

/* The first instant of the UTC calendar month that holds the instant
 * just before t (so to=2026-11-01 defaults from to 2026-10-01). */
static struct usage_ts month_start_before(const struct usage_ts *t)
{
    int64_t us = ts_us(t) - 1;
    int64_t sec = us >= 0 ? us / US_PER_S : -((-us + US_PER_S - 1) / US_PER_S);
    time_t secs = (time_t)sec;
    struct tm tm;
    gmtime_r(&secs, &tm);
    struct usage_ts s = {
        days_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, 1) * 86400, 0};
    return s;
}

static struct usage_ts wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct usage_ts t = {ts.tv_sec, (int32_t)(ts.tv_nsec / 1000)};
    return t;
}

/* Reads ?from and ?to into text for the store; answers 400 and returns
 * false when either is malformed or the range is reversed or too long. */
static bool read_range(struct req *r, char from_s[TS_TEXT],
                       char to_s[TS_TEXT])
{
    const char *fq = req_query(r, "from"), *tq = req_query(r, "to");
    struct usage_ts from, to;
    if (fq && !parse_time(fq, &from)) {
        req_problem(r, 400, "bad_query", "from must be an RFC 3339 "
                    "timestamp or a date (YYYY-MM-DD)");
        return false;
    }
    if (tq && !parse_time(tq, &to)) {
        req_problem(r, 400, "bad_query", "to must be an RFC 3339 "
                    "timestamp or a date (YYYY-MM-DD)");
        return false;
    }
    if (!tq)
        to = wall_now();
    if (!fq)
        from = month_start_before(&to);
    if (ts_us(&from) > ts_us(&to)) {
        req_problem(r, 400, "bad_query", "from is after to");
        return false;
    }
    if (ts_us(&to) - ts_us(&from) > USAGE_MAX_DAYS * 86400LL * US_PER_S) {
        req_problem(r, 400, "bad_query",
                    "from and to are more than %d days apart",
                    USAGE_MAX_DAYS);
        return false;
    }
    format_time(&from, from_s);
    format_time(&to, to_s);
    return true;
}

/* ?group_by: NULL (none), or "day", "model" or "chat" into *out. */
static bool read_group(struct req *r, const char **out)
{
    const char *g = req_query(r, "group_by");
    *out = NULL;
    if (!g)
        return true;
    if (strcmp(g, "day") && strcmp(g, "model") && strcmp(g, "chat")) {
        req_problem(r, 400, "bad_query",
                    "group_by must be day, model or chat");
        return false;
    }
    *out = g;
    return true;
}

/* ?user_id: an admin's view of another user; the caller by default. */
static bool read_user(struct req *r, const char **out)
{
    const char *u = req_query(r, "user_id");
    *out = r->auth.user_id;
    if (!u)
        return true;
    if (!r->auth.admin) {
        req_problem(r, 403, "admin_only",
                    "user_id is for administrators only");
        return false;
    }
    if (!ids_is_uuid(u)) {
        req_problem(r, 400, "bad_query", "user_id is not a user id");
        return false;
    }
    *out = u;
    return true;
}

/* The members shared by the totals and each group. */
static void write_sums(struct json_w *w, const PGresult *res, int row)
{
    static const char *const names[] = {
        [USAGE_INPUT] = "input_tokens",
        [USAGE_OUTPUT] = "output_tokens",
        [USAGE_CACHE_CREATE] = "cache_creation_input_tokens",
        [USAGE_CACHE_READ] = "cache_read_input_tokens",
        [USAGE_COST] = "cost_usd",
        [USAGE_MESSAGES] = "messages",
    };
    for (int col = USAGE_INPUT; col <= USAGE_MESSAGES; col++) {
        const char *v = pg_val(res, row, col);
        json_w_key(w, names[col]);
        json_w_raw(w, v ? v : "0", v ? strlen(v) : 1); /* numeric text */
    }
}

static void on_report(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "user"))
        return;
    const PGresult *res = reply->res;
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_key(&w, "totals");
    json_w_obj_begin(&w);
    write_sums(&w, res, 0); /* the totals come first */
    json_w_obj_end(&w);
    json_w_key(&w, "groups");
    json_w_arr_begin(&w);
    for (int i = 1; i < PQntuples(res); i++) {
        json_w_obj_begin(&w);
        json_w_kstr(&w, "key", pg_val(res, i, USAGE_KEY));
        write_sums(&w, res, i);
        json_w_obj_end(&w);
    }
    json_w_arr_end(&w);
    json_w_obj_end(&w);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

void api_usage_get(struct req *r)
{
    char from[TS_TEXT], to[TS_TEXT];
    const char *group, *user;
    if (!read_range(r, from, to) || !read_group(r, &group) ||
        !read_user(r, &user))
        return;
    store_usage_report(r->srv->pg, user, from, to, group, on_report, r);
}
