/* httpc: libcurl multi on libevent, after curl's hiperfifo.c. curl tells
 * us which sockets to watch (sock_cb, one event per socket) and when to
 * wake it (timer_cb, one timer); each readiness goes back to curl through
 * curl_multi_socket_action, after which finished transfers are drained
 * with curl_multi_info_read.
 *
 * curl forbids calling multi functions from inside its callbacks, and our
 * users may cancel, pause, start or free from inside theirs. So cancels,
 * resumes and handle additions made inside curl are deferred to the
 * "reap" event, and httpc_free inside a callback only marks the handle:
 * the outermost dispatch frees it once the stack unwinds (depth == 0). */
#include "corral/httpc.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "corral/buf.h"
#include "corral/log.h"
#include "corral/mem.h"

#define HTTPC_MAX_HEAD (256 * 1024) /* one response head, all lines */
#define HTTPC_MAX_ADDRS 8           /* addresses per resolve entry */

struct httpc_sock {
    struct httpc *h;
    struct event *ev;
    struct httpc_sock *prev, *next;
};

struct httpc {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;        /* curl's single timeout */
    struct event *reap;         /* deferred cancels, resumes, adds */
    struct curl_slist *resolve; /* CURLOPT_RESOLVE for every handle */
    struct httpc_req *reqs;     /* live requests, doubly linked */
    struct httpc_sock *socks;   /* watched sockets, freed at the end */
    int depth;                  /* dispatch nesting: >0 inside callbacks */
    bool in_curl;               /* inside a curl call: no multi calls */
    bool freeing;               /* httpc_free called; free at depth 0 */
};

struct httpc_req {
    struct httpc *h;
    CURL *easy;
    struct curl_slist *hdrs;
    struct httpc_cbs cbs;
    void *arg;
    struct buf head;  /* header lines of the current block */
    int status;       /* status of the current block */
    const char *fail; /* static: set-up failure, reported by reap */
    bool added;       /* in the multi handle */
    bool add_pending; /* to add from reap (created inside curl) */
    bool head_done;   /* on_head fired */
    bool cancelled;
    bool pause;  /* the user wants no on_body now */
    bool held;   /* we returned CURL_WRITEFUNC_PAUSE */
    bool resume; /* curl_easy_pause(CONT) pending in reap */
    struct httpc_req *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
};

static void check_info(struct httpc *h);
static void destroy(struct httpc *h);

/* ---- dispatch depth: deferred free ---- */

static void enter(struct httpc *h)
{
    h->depth++;
}

/* Frees h when httpc_free was called inside the stack now unwound. The
 * caller must not touch h afterwards. */
static void leave(struct httpc *h)
{
    if (--h->depth == 0 && h->freeing)
        destroy(h);
}

static void wake_reap(struct httpc *h)
{
    event_active(h->reap, EV_TIMEOUT, 0);
}

/* ---- request completion (the only place on_done fires) ---- */

static void req_unlink(struct httpc_req *r)
{
    struct httpc *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void deliver_head(struct httpc_req *r)
{
    r->head_done = true;
    if (r->cbs.on_head)
        r->cbs.on_head(r->arg, r->status, buf_cstr(&r->head), r->head.len);
}

/* Detaches r from curl and the list, reports err and frees r. Called only
 * outside curl (check_info, reap, destroy). */
static void req_finish(struct httpc_req *r, const char *err)
{
    struct httpc *h = r->h;
    req_unlink(r);
    if (r->cancelled)
        err = "cancelled";
    if (!err && !r->head_done) {
        /* A complete transfer whose head ended without a blank line
         * (HTTP/0.9-like); report what curl saw. */
        long code = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        r->status = (int)code;
        deliver_head(r);
    }
    if (r->added)
        curl_multi_remove_handle(h->multi, r->easy);
    if (r->easy)
        curl_easy_cleanup(r->easy);
    r->easy = NULL;
    enter(h);
    r->cbs.on_done(r->arg, err); /* err may point into r->errbuf */
    h->depth--;                  /* not leave(): our caller unwinds */
    curl_slist_free_all(r->hdrs);
    buf_deinit(&r->head);
    free(r);
}

static void check_info(struct httpc *h)
{
    CURLMsg *m;
    int left;
    while (!h->freeing && (m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = m->data.result; /* m dies with remove_handle */
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct httpc_req *r = (struct httpc_req *)(void *)priv;
        const char *err = NULL;
        if (rc != CURLE_OK)
            err = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
        req_finish(r, err);
    }
}

/* ---- curl → loop: sockets and the timer ---- */

static void socket_action(struct httpc *h, curl_socket_t fd, int mask)
{
    int running;
    enter(h);
    h->in_curl = true;
    curl_multi_socket_action(h->multi, fd, mask, &running);
    h->in_curl = false;
    check_info(h);
    leave(h);
}

static void on_sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct httpc *h = arg;
    int mask = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
               ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    socket_action(h, fd, mask);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    socket_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static void sock_free(struct httpc *h, struct httpc_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    event_free(s->ev);
    free(s);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp,
                   void *socketp)
{
    struct httpc *h = userp;
    struct httpc_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s)
            sock_free(h, s);
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof(*s));
        s->h = h;
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    } else {
        event_free(s->ev);
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    s->ev = event_new(h->base, fd, kind, on_sock_event, h);
    event_add(s->ev, NULL);
    return 0;
}

/* curl asks for one wake-up; -1 cancels it. A 0 timeout is armed too
 * instead of acting at once: curl must not be re-entered from here. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct httpc *h = userp;
    if (timeout_ms < 0) {
        evtimer_del(h->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(h->timer, &tv);
    return 0;
}

/* ---- deferred work ---- */

/* Does r's deferred work; true when it did some (r may be freed). */
static bool reap_one(struct httpc *h, struct httpc_req *r)
{
    if (r->cancelled || r->fail) {
        req_finish(r, r->fail);
        return true;
    }
    if (r->add_pending) {
        r->add_pending = false;
        if (curl_multi_add_handle(h->multi, r->easy) == CURLM_OK)
            r->added = true;
        else
            r->fail = "curl_multi_add_handle failed";
        return true;
    }
    if (r->resume) {
        r->resume = false;
        r->held = false;
        h->in_curl = true;
        curl_easy_pause(r->easy, CURLPAUSE_CONT); /* may call on_body */
        h->in_curl = false;
        return true;
    }
    return false;
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct httpc *h = arg;
    enter(h);
    /* Callbacks may change the list: rescan after every piece of work. */
    bool again = true;
    while (again && !h->freeing) {
        again = false;
        for (struct httpc_req *r = h->reqs; r && !again;) {
            struct httpc_req *next = r->next;
            again = reap_one(h, r);
            r = next;
        }
    }
    if (!h->freeing)
        check_info(h);
    leave(h);
}

/* ---- curl → user: head and body ---- */

static int parse_status(const char *p, size_t len)
{
    /* "HTTP/1.1 200 OK" or "HTTP/2 200" */
    const char *sp = memchr(p, ' ', len);
    if (!sp)
        return 0;
    int status = 0;
    for (const char *q = sp + 1; q < p + len && *q >= '0' && *q <= '9'; q++)
        status = status * 10 + (*q - '0');
    return status;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct httpc_req *r = ud;
    size_t len = size * n;
    if (r->cancelled)
        return 0; /* aborts the transfer */
    if (r->head_done)
        return len; /* trailers */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* A new block: an interim one (100 Continue, 103) came first. */
        buf_reset(&r->head);
        r->status = parse_status(p, len);
        return len;
    }
    if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
        if (r->status >= 100 && r->status < 200 && r->status != 101) {
            buf_reset(&r->head);
            return len;
        }
        deliver_head(r);
        return r->cancelled ? 0 : len;
    }
    if (r->head.len + len > HTTPC_MAX_HEAD) {
        snprintf(r->errbuf, sizeof(r->errbuf), "response head too large");
        return 0;
    }
    buf_append(&r->head, p, len);
    return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct httpc_req *r = ud;
    size_t len = size * n;
    if (r->cancelled)
        return 0; /* a short count aborts the transfer */
    if (r->pause) {
        /* curl keeps these bytes and offers them again after CONT. */
        r->held = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (!r->head_done)
        deliver_head(r);
    if (r->cbs.on_body && !r->cancelled && len)
        r->cbs.on_body(r->arg, p, len);
    return r->cancelled ? 0 : len;
}

/* ---- set-up ---- */

static void slist_add(struct curl_slist **l, const char *s)
{
    struct curl_slist *n = curl_slist_append(*l, s);
    if (!n)
        abort(); /* out of memory, as xmalloc */
    *l = n;
}

static bool has_header(const char *const *hdrs, const char *name)
{
    size_t n = strlen(name);
    for (; hdrs && *hdrs; hdrs++)
        if (strncasecmp(*hdrs, name, n) == 0 && (*hdrs)[n] == ':')
            return true;
    return false;
}

static void build_headers(struct httpc_req *r, const struct httpc_req_opts *o)
{
    /* "Name:" with no value stops curl from adding its own default, so
     * the caller's headers are the ones sent. */
    static const char *const defaults[] = {
        "Accept:", "Expect:", "Content-Type:"};
    for (const char *const *p = o->headers; p && *p; p++)
        slist_add(&r->hdrs, *p);
    for (size_t i = 0; i < ARRAY_SIZE(defaults); i++) {
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)strlen(defaults[i]) - 1,
                 defaults[i]);
        if (!has_header(o->headers, name))
            slist_add(&r->hdrs, defaults[i]);
    }
}

static bool set_method(CURL *e, const struct httpc_req_opts *o)
{
    const char *m = o->method ? o->method : "GET";
    bool with_body = o->body_len > 0 || strcmp(m, "POST") == 0 ||
                     strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
    bool bad = false;
    if (with_body) {
        /* The size first: COPYPOSTFIELDS copies that many bytes. */
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                                (curl_off_t)o->body_len) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS,
                                o->body_len ? o->body : "") != CURLE_OK;
        if (strcmp(m, "POST") != 0)
            bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m) != CURLE_OK;
    } else if (strcmp(m, "GET") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    } else if (strcmp(m, "HEAD") == 0) {
        bad |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L) != CURLE_OK;
    } else {
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m) != CURLE_OK;
    }
    return !bad;
}

static bool setup_easy(struct httpc_req *r, const struct httpc_req_opts *o)
{
    CURL *e = r->easy;
    build_headers(r, o);
    bool bad = !o->url || !set_method(e, o);
    bad |= curl_easy_setopt(e, CURLOPT_URL, o->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                            o->connect_timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    if (r->h->resolve)
        bad |= curl_easy_setopt(e, CURLOPT_RESOLVE, r->h->resolve) != CURLE_OK;
    if (o->accept_encoding)
        bad |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING,
                                o->accept_encoding) != CURLE_OK;
    return !bad;
}

/* ---- public ---- */

struct httpc_req *httpc_request(struct httpc *h,
                                const struct httpc_req_opts *opts,
                                const struct httpc_cbs *cbs, void *arg)
{
    if (h->freeing)
        return NULL;
    struct httpc_req *r = xcalloc(1, sizeof(*r));
    r->h = h;
    r->cbs = *cbs;
    r->arg = arg;
    buf_init(&r->head);
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    r->easy = curl_easy_init();
    if (!r->easy || !setup_easy(r, opts)) {
        r->fail = "request set-up failed";
        wake_reap(h);
    } else if (h->in_curl) {
        r->add_pending = true; /* curl forbids adding from its callbacks */
        wake_reap(h);
    } else if (curl_multi_add_handle(h->multi, r->easy) == CURLM_OK) {
        r->added = true;
    } else {
        r->fail = "curl_multi_add_handle failed";
        wake_reap(h);
    }
    return r;
}

void httpc_cancel(struct httpc_req *r)
{
    if (!r || r->cancelled)
        return;
    r->cancelled = true;
    wake_reap(r->h);
}

void httpc_pause(struct httpc_req *r, bool pause)
{
    if (!r || r->cancelled)
        return;
    r->pause = pause;
    if (!pause && r->held) {
        r->resume = true;
        wake_reap(r->h);
    }
}

struct httpc *httpc_new(struct event_base *base, const char *const *resolve)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    struct httpc *h = xcalloc(1, sizeof(*h));
    h->base = base;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        curl_global_cleanup();
        return NULL;
    }
    h->timer = evtimer_new(base, on_timer, h);
    h->reap = event_new(base, -1, 0, on_reap, h);
    for (const char *const *p = resolve; p && *p; p++)
        slist_add(&h->resolve, *p);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

static void destroy(struct httpc *h)
{
    h->depth++; /* on_done callbacks below cannot re-enter destroy */
    while (h->reqs)
        req_finish(h->reqs, "cancelled");
    curl_multi_cleanup(h->multi);
    while (h->socks)
        sock_free(h, h->socks);
    event_free(h->timer);
    event_free(h->reap);
    curl_slist_free_all(h->resolve);
    free(h);
    curl_global_cleanup();
}

void httpc_free(struct httpc *h)
{
    if (!h || h->freeing)
        return;
    h->freeing = true;
    if (h->depth == 0)
        destroy(h);
}

/* ---- start-up name resolution ---- */

static bool host_is_literal(const char *host)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return host[0] == '[' || inet_pton(AF_INET, host, tmp) == 1 ||
           strcasecmp(host, "localhost") == 0;
}

static int append_addrs(struct buf *entry, const char *host, const char **err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        *err = gai_strerror(rc);
        return -1;
    }
    int n = 0;
    for (struct addrinfo *a = res; a && n < HTTPC_MAX_ADDRS; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *src;
        if (a->ai_family == AF_INET)
            src = &((const struct sockaddr_in *)(void *)a->ai_addr)->sin_addr;
        else if (a->ai_family == AF_INET6)
            src = &((const struct sockaddr_in6 *)(void *)a->ai_addr)->sin6_addr;
        else
            continue;
        if (!inet_ntop(a->ai_family, src, ip, sizeof(ip)))
            continue;
        buf_printf(entry, a->ai_family == AF_INET6 ? "%s[%s]" : "%s%s",
                   n ? "," : "", ip);
        n++;
    }
    freeaddrinfo(res);
    if (n == 0) {
        *err = "host has no IPv4 or IPv6 address";
        return -1;
    }
    return 0;
}

static void list_append(char ***list, char *entry)
{
    size_t n = 0;
    while (*list && (*list)[n])
        n++;
    *list = xrealloc(*list, (n + 2) * sizeof(**list));
    (*list)[n] = entry;
    (*list)[n + 1] = NULL;
}

int httpc_resolve_url(const char *url, char ***resolve, const char **err)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;
    int rc = -1;
    if (!u)
        abort();
    if (!url || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        *err = "invalid URL";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK) {
        *err = "URL without a host or port";
        goto out;
    }
    rc = 0;
    if (host_is_literal(host))
        goto out;
    struct buf entry;
    buf_init(&entry);
    buf_printf(&entry, "%s:%s:", host, port);
    rc = append_addrs(&entry, host, err);
    if (rc == 0)
        list_append(resolve, buf_steal(&entry, NULL));
    buf_deinit(&entry);
out:
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

void httpc_resolve_free(char **resolve)
{
    for (size_t i = 0; resolve && resolve[i]; i++)
        free(resolve[i]);
    free(resolve);
}
