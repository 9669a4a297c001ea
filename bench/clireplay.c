/* clireplay: a stand-in for the Claude CLI in bench shape 7 (bench/README.md
 * "Shape 7"). corral launches it in place of the CLI (cli_path), in the
 * sandbox, with the CLI's argv; it speaks the CLI's stdio protocol from a
 * recording of the real CLI (bench/record-turn, bench/fixtures/turn.jsonl),
 * read from <argv[0]>.jsonl:
 *
 * - control requests on stdin are answered the way the CLI answers them:
 *   initialize with the recorded answer, any other with an empty success;
 * - each stream-json user message on stdin plays the next recorded turn's
 *   stdout lines (the last turn again once the recording runs out), with
 *   no delay between lines unless CLIREPLAY_LINE_US is set;
 * - every text_delta's text starts with "[t_ns=<CLOCK_REALTIME ns>] ",
 *   taken just before the line is written, so a client of corral's SSE
 *   stream measures CLI line -> SSE latency (ssebench --t-key 't_ns=');
 * - the recorded session id is replaced by the one of --session-id= or
 *   --resume=, as the CLI reports its own;
 * - it stays alive for further turns until stdin closes (a warm CLI);
 * - with <argv[0]>.cpus (a comma list of CPU numbers) it moves itself to
 *   those CPUs: corrald's children inherit the server's pinned core, and
 *   2,000 replayers there would measure the CPU they share, not corral
 *   (bench/run puts them on the load core).
 *
 * One process per run and 2,000 at once: plain blocking stdio, the
 * recording held once (tens of KiB), nothing else. */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SID_LEN 36 /* a UUID */

struct line {
    char *s;
    size_t len;
};

struct turn {
    struct line *lines;
    size_t n;
};

static struct line init_answer; /* the recorded initialize answer */
static struct turn *turns;
static size_t nturns;
static long line_us;

static void die(const char *msg)
{
    fprintf(stderr, "clireplay: %s\n", msg);
    exit(1);
}

static void write_all(const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(1, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            exit(0); /* the host went away */
        s += n;
        len -= (size_t)n;
    }
}

static bool has(const struct line *l, const char *needle)
{
    return memmem(l->s, l->len, needle, strlen(needle)) != NULL;
}

/* A fixture line {"dir":"in"|"out","line":{...}}: the object after
 * "line": (bench/record-turn writes them compact, in this order). */
static bool payload(char *s, size_t len, struct line *out, bool *in)
{
    static const char key[] = ",\"line\":";
    char *p = memmem(s, len, key, sizeof(key) - 1);
    if (!p || len < 2 || s[len - 1] != '}')
        return false;
    *in = strncmp(s, "{\"dir\":\"in\"", 11) == 0;
    out->s = p + sizeof(key) - 1;
    out->len = (size_t)(s + len - 1 - out->s);
    return true;
}

static void turn_add(struct turn *t, struct line l)
{
    t->lines = realloc(t->lines, sizeof(*t->lines) * (t->n + 1));
    if (!t->lines)
        die("out of memory");
    t->lines[t->n++] = l;
}

/* Replaces every copy of the recorded session id (the init line's) in the
 * loaded text with sid, in place (the same length). */
static void swap_session(char *text, size_t len, const char *sid)
{
    static const char key[] = "\"session_id\":\"";
    if (!sid || strlen(sid) != SID_LEN)
        return;
    /* the first one that is a UUID (the user lines say "default") */
    char *p = text;
    while ((p = memmem(p, len - (size_t)(p - text), key, sizeof(key) - 1))) {
        p += sizeof(key) - 1;
        if ((size_t)(text + len - p) > SID_LEN && p[SID_LEN] == '"')
            break;
    }
    if (!p)
        return;
    char old[SID_LEN];
    memcpy(old, p, SID_LEN);
    for (char *q = text; (q = memmem(q, len - (size_t)(q - text), old,
                                     SID_LEN)) != NULL;
         q += SID_LEN)
        memcpy(q, sid, SID_LEN);
}

static void load(const char *path, const char *sid)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open the recording (<argv[0]>.jsonl)");
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, m);
    fclose(f);
    fclose(m);
    swap_session(text, len, sid);
    struct turn *cur = NULL;
    for (char *s = text, *nl; s < text + len; s = nl + 1) {
        nl = memchr(s, '\n', (size_t)(text + len - s));
        if (!nl)
            nl = text + len;
        struct line l;
        bool in;
        if (!payload(s, (size_t)(nl - s), &l, &in))
            continue;
        if (in && has(&l, "\"type\":\"user\"")) {
            turns = realloc(turns, sizeof(*turns) * (nturns + 1));
            if (!turns)
                die("out of memory");
            cur = &turns[nturns++];
            memset(cur, 0, sizeof(*cur));
        } else if (!in && has(&l, "\"type\":\"control_response\"")) {
            if (!cur && !init_answer.s)
                init_answer = l;
        } else if (!in && cur) {
            turn_add(cur, l);
        }
    }
    if (!init_answer.s || nturns == 0)
        die("the recording has no initialize answer or no turn");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One recorded line; a text delta gets the timestamp in front of its
 * text. */
static void emit(const struct line *l)
{
    static const char key[] = "\"type\":\"text_delta\",\"text\":\"";
    char out[64];
    char *p = memmem(l->s, l->len, key, sizeof(key) - 1);
    if (line_us > 0)
        usleep((useconds_t)line_us);
    if (!p) {
        write_all(l->s, l->len);
        write_all("\n", 1);
        return;
    }
    size_t head = (size_t)(p - l->s) + sizeof(key) - 1;
    int n = snprintf(out, sizeof(out), "[t_ns=%llu] ",
                     (unsigned long long)now_ns());
    /* one write: the host sees the line whole, as from the CLI */
    char *line = malloc(l->len + (size_t)n + 1);
    if (!line)
        die("out of memory");
    memcpy(line, l->s, head);
    memcpy(line + head, out, (size_t)n);
    memcpy(line + head + n, l->s + head, l->len - head);
    line[l->len + (size_t)n] = '\n';
    write_all(line, l->len + (size_t)n + 1);
    free(line);
}

/* The value of "request_id":"..." in a control request, into id. */
static bool request_id(const char *s, char *id, size_t cap)
{
    const char *p = strstr(s, "\"request_id\":\"");
    if (!p)
        return false;
    p += 14;
    const char *e = strchr(p, '"');
    if (!e || (size_t)(e - p) >= cap)
        return false;
    memcpy(id, p, (size_t)(e - p));
    id[e - p] = '\0';
    return true;
}

static void answer_control(const char *req)
{
    char id[128], out[512];
    if (!request_id(req, id, sizeof(id)))
        return;
    if (strstr(req, "\"subtype\":\"initialize\"")) {
        /* the recorded answer with this request's id */
        static const char key[] = "\"request_id\":\"";
        char *p = memmem(init_answer.s, init_answer.len, key, sizeof(key) - 1);
        char *e = p ? memchr(p + sizeof(key) - 1, '"',
                             init_answer.len - (size_t)(p - init_answer.s) -
                                 (sizeof(key) - 1))
                    : NULL;
        if (p && e) {
            size_t head = (size_t)(p - init_answer.s) + sizeof(key) - 1;
            write_all(init_answer.s, head);
            write_all(id, strlen(id));
            write_all(e, init_answer.len - (size_t)(e - init_answer.s));
            write_all("\n", 1);
            return;
        }
    }
    int n = snprintf(out, sizeof(out),
                     "{\"type\":\"control_response\",\"response\":{"
                     "\"subtype\":\"success\",\"request_id\":\"%s\","
                     "\"response\":{}}}\n", id);
    write_all(out, (size_t)n);
}

static const char *session_arg(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--session-id=", 13) == 0)
            return argv[i] + 13;
        if (strncmp(argv[i], "--resume=", 9) == 0)
            return argv[i] + 9;
    }
    return NULL;
}

static void pin(const char *base)
{
    char path[4096], list[256];
    snprintf(path, sizeof(path), "%s.cpus", base);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(list, 1, sizeof(list) - 1, f);
    fclose(f);
    list[n] = '\0';
    cpu_set_t set;
    CPU_ZERO(&set);
    for (char *p = list, *end; *p; p = end) {
        long cpu = strtol(p, &end, 10);
        if (end == p) {
            end = p + 1;
            continue;
        }
        if (cpu >= 0 && cpu < CPU_SETSIZE)
            CPU_SET((int)cpu, &set);
    }
    if (CPU_COUNT(&set) > 0)
        sched_setaffinity(0, sizeof(set), &set);
}

int main(int argc, char **argv)
{
    char path[4096];
    if (argc < 1 || snprintf(path, sizeof(path), "%s.jsonl", argv[0]) >=
                        (int)sizeof(path))
        die("argv[0] too long");
    const char *pace = getenv("CLIREPLAY_LINE_US");
    line_us = pace ? strtol(pace, NULL, 10) : 0;
    pin(argv[0]);
    load(path, session_arg(argc, argv));
    char *req = NULL;
    size_t cap = 0, next = 0;
    ssize_t n;
    while ((n = getline(&req, &cap, stdin)) > 0) {
        if (strstr(req, "\"type\":\"control_request\"")) {
            answer_control(req);
        } else if (strstr(req, "\"type\":\"user\"")) {
            const struct turn *t = &turns[next < nturns ? next : nturns - 1];
            next++;
            for (size_t i = 0; i < t->n; i++)
                emit(&t->lines[i]);
        }
    }
    free(req);
    return 0;
}
