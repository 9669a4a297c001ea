/* Integration tests for the model gateway (src/gateway/gateway.c) and
 * httpc (src/core/httpc.c). No services needed: the upstream is a small
 * Python HTTP server that the test starts (python3 -c, 127.0.0.1:0); it
 * echoes requests as JSON, streams SSE with delays, answers 429, closes
 * mid-answer, hangs, and prints to its stdout when a client went away.
 *
 * Clients are bufferevents on the event loop that also drives the
 * gateway; the upstream runs in its own process, so its delays are real
 * time. run_until() bounds every wait with a deadline, so a broken gateway
 * fails a test instead of hanging it. The upstream's X-Test-Mode request
 * header picks its behaviour. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "corral/buf.h"
#include "corral/config.h"
#include "corral/crypto.h"
#include "corral/gateway.h"
#include "corral/httpc.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"

#define KEY "sk-ant-test-real-key-0123456789"
#define MSG_PATH "/v1/messages?beta=true"

/* One literal per line: C caps a single string literal's length. */
static const char *const upstream_py[] = {
    "import gzip, hashlib, json, socket, sys, time\n",
    "from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler\n",
    "\n",
    "def out(s):\n",
    "    sys.stdout.write(s + '\\n')\n",
    "    sys.stdout.flush()\n",
    "\n",
    "def ev(name, obj, eol):\n",
    "    data = json.dumps(obj)\n",
    "    text = 'event: ' + name + eol + 'data: ' + data + eol + eol\n",
    "    return text.encode()\n",
    "\n",
    "USAGE = {'input_tokens': 25, 'cache_creation_input_tokens': 4,\n",
    "         'cache_read_input_tokens': 9, 'output_tokens': 1}\n",
    "START = {'type': 'message_start',\n",
    "         'message': {'id': 'msg_1', 'type': 'message',\n",
    "                     'role': 'assistant', 'content': [],\n",
    "                     'model': 'claude-test-sse',\n",
    "                     'usage': USAGE}}\n",
    "BLOCK = {'type': 'text', 'text': ''}\n",
    "DELTA = {'type': 'text_delta', 'text': 'Hello message_delta'}\n",
    "SSE = (ev('message_start', START, '\\n')\n",
    "       + ev('content_block_start', {'type': 'content_block_start',\n",
    "                                    'index': 0,\n",
    "                                    'content_block': BLOCK}, '\\n')\n",
    "       + ev('content_block_delta', {'type': 'content_block_delta',\n",
    "                                    'index': 0,\n",
    "                                    'delta': DELTA}, '\\r\\n')\n",
    "       + ev('content_block_stop', {'type': 'content_block_stop',\n",
    "                                   'index': 0}, '\\r\\n')\n",
    "       + ev('message_delta', {'type': 'message_delta',\n",
    "                              'delta': {'stop_reason': 'end_turn'},\n",
    "                              'usage': {'output_tokens': 42}},\n",
    "             '\\r\\n')\n",
    "       + ev('message_stop', {'type': 'message_stop'}, '\\n'))\n",
    "PING = ev('ping', {'type': 'ping'}, '\\n')\n",
    "\n",
    "class H(BaseHTTPRequestHandler):\n",
    "    protocol_version = 'HTTP/1.1'\n",
    "\n",
    "    def log_message(self, *a):\n",
    "        pass\n",
    "\n",
    "    def body(self):\n",
    "        n = int(self.headers.get('Content-Length') or 0)\n",
    "        data = b''\n",
    "        while len(data) < n:\n",
    "            c = self.rfile.read(n - len(data))\n",
    "            if not c:\n",
    "                break\n",
    "            data += c\n",
    "        return data\n",
    "\n",
    "    def do_GET(self):\n",
    "        self.route()\n",
    "\n",
    "    def do_POST(self):\n",
    "        self.route()\n",
    "\n",
    "    def route(self):\n",
    "        b = self.body()\n",
    "        name = self.headers.get('X-Test-Mode') or 'echo'\n",
    "        out('REQUEST ' + name)\n",
    "        getattr(self, 'r_' + name, self.r_echo)(b)\n",
    "\n",
    "    def reply(self, code, data, hdrs):\n",
    "        self.send_response(code)\n",
    "        for k, v in hdrs:\n",
    "            self.send_header(k, v)\n",
    "        self.send_header('Content-Length', str(len(data)))\n",
    "        self.end_headers()\n",
    "        self.wfile.write(data)\n",
    "\n",
    "    def echo_obj(self, b):\n",
    "        usage = {'input_tokens': 11, 'output_tokens': 7,\n",
    "                 'cache_creation_input_tokens': 3,\n",
    "                 'cache_read_input_tokens': 5}\n",
    "        return {'method': self.command, 'path': self.path,\n",
    "                'headers': [[k, v] for k, v in self.headers.items()],\n",
    "                'body_len': len(b),\n",
    "                'body_sha256': hashlib.sha256(b).hexdigest(),\n",
    "                'model': 'claude-test-echo',\n",
    "                'usage': usage}\n",
    "\n",
    "    def r_echo(self, b):\n",
    "        self.reply(200, json.dumps(self.echo_obj(b)).encode(),\n",
    "                   [('Content-Type', 'application/json'),\n",
    "                    ('X-Upstream', 'echo')])\n",
    "\n",
    "    def r_gzip(self, b):\n",
    "        data = gzip.compress(json.dumps(self.echo_obj(b)).encode())\n",
    "        self.reply(200, data, [('Content-Type', 'application/json'),\n",
    "                               ('Content-Encoding', 'gzip')])\n",
    "\n",
    "    def r_429(self, b):\n",
    "        err = {'type': 'error', 'error': {'type': 'rate_limit_error',\n",
    "                                          'message': 'slow down'}}\n",
    "        self.reply(429, json.dumps(err).encode(),\n",
    "                   [('Content-Type', 'application/json'),\n",
    "                    ('retry-after', '7'),\n",
    "                    ('anthropic-ratelimit-requests-remaining', '0')])\n",
    "\n",
    "    def chunk(self, data):\n",
    "        self.wfile.write(b'%x\\r\\n%s\\r\\n' % (len(data), data))\n",
    "        self.wfile.flush()\n",
    "\n",
    "    def sse_head(self):\n",
    "        self.send_response(200)\n",
    "        self.send_header('Content-Type', 'text/event-stream')\n",
    "        self.send_header('Cache-Control', 'no-cache')\n",
    "        self.send_header('Transfer-Encoding', 'chunked')\n",
    "        self.end_headers()\n",
    "\n",
    "    def r_sse(self, b):\n",
    "        self.sse_head()\n",
    "        # Cuts inside events, one between a CR and its LF.\n",
    "        crlf = SSE.index(b'\\r\\n', 300) + 1\n",
    "        mid = SSE.index(b'message_delta') + 5\n",
    "        cuts = sorted({0, 40, 200, crlf, mid, len(SSE) - 30, len(SSE)})\n",
    "        for i in range(len(cuts) - 1):\n",
    "            if i:\n",
    "                time.sleep(0.15)\n",
    "            self.chunk(SSE[cuts[i]:cuts[i + 1]])\n",
    "        self.wfile.write(b'0\\r\\n\\r\\n')\n",
    "        self.wfile.flush()\n",
    "        out('SENT sse')\n",
    "\n",
    "    def r_slow(self, b):\n",
    "        self.sse_head()\n",
    "        try:\n",
    "            self.chunk(ev('message_start', START, '\\n'))\n",
    "            for i in range(400):\n",
    "                time.sleep(0.05)\n",
    "                self.chunk(PING)\n",
    "            self.wfile.write(b'0\\r\\n\\r\\n')\n",
    "            self.wfile.flush()\n",
    "            out('FINISHED slow')\n",
    "        except OSError:\n",
    "            out('CLOSED slow')\n",
    "        self.close_connection = True\n",
    "\n",
    "    def r_big(self, b):\n",
    "        piece = bytes(range(256)) * 4096\n",
    "        self.send_response(200)\n",
    "        self.send_header('Content-Type', 'application/octet-stream')\n",
    "        self.send_header('Content-Length', str(32 * len(piece)))\n",
    "        self.end_headers()\n",
    "        for i in range(32):\n",
    "            self.wfile.write(piece)\n",
    "        self.wfile.flush()\n",
    "        out('SENT big')\n",
    "\n",
    "    def r_hang(self, b):\n",
    "        time.sleep(5)\n",
    "        self.close_connection = True\n",
    "\n",
    "    def r_close(self, b):\n",
    "        self.send_response(200)\n",
    "        self.send_header('Content-Type', 'application/json')\n",
    "        self.send_header('Content-Length', '1000')\n",
    "        self.end_headers()\n",
    "        self.wfile.write(b'{\"partial\": \"' + b'x' * 100)\n",
    "        self.wfile.flush()\n",
    "        self.connection.shutdown(socket.SHUT_RDWR)\n",
    "        self.close_connection = True\n",
    "\n",
    "srv = ThreadingHTTPServer(('127.0.0.1', 0), H)\n",
    "srv.daemon_threads = True\n",
    "out('SSE ' + hashlib.sha256(SSE).hexdigest())\n",
    "out('PORT %d' % srv.server_address[1])\n",
    "srv.serve_forever()\n",
    NULL};

/* ---- the upstream process ---- */

static pid_t up_pid;
static int up_port;
static int up_fd = -1;    /* its stdout, non-blocking after start-up */
static struct buf up_out; /* everything it printed */
static char sse_sha[65];  /* hex SHA-256 of its SSE answer */
static char tmpdir[64];
static char log_path[128];

static void up_read(void)
{
    char b[4096];
    ssize_t n;
    while ((n = read(up_fd, b, sizeof(b))) > 0)
        buf_append(&up_out, b, (size_t)n);
}

static int up_count(const char *word)
{
    int n = 0;
    const char *p = buf_cstr(&up_out);
    while ((p = strstr(p, word))) {
        n++;
        p += strlen(word);
    }
    return n;
}

static void on_up_out(evutil_socket_t fd, short what, void *arg)
{
    up_read();
}

static int64_t now_ms(void)
{
    return (int64_t)(server_mono_us() / 1000);
}

/* Starts the upstream and waits (bounded) for its port. */
static int up_start(void)
{
    int p[2];
    struct buf src;
    buf_init(&src);
    for (size_t i = 0; upstream_py[i]; i++)
        buf_puts(&src, upstream_py[i]);
    char *script = buf_steal(&src, NULL);
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    up_pid = fork();
    if (up_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(p[1], 1);
        execl("/usr/bin/python3", "python3", "-c", script, (char *)NULL);
        _exit(127);
    }
    free(script);
    close(p[1]);
    up_fd = p[0];
    buf_init(&up_out);
    int64_t deadline = now_ms() + 15000;
    const char *port;
    while (!(port = strstr(buf_cstr(&up_out), "PORT ")) ||
           !strchr(port, '\n')) {
        struct pollfd pfd = {.fd = up_fd, .events = POLLIN};
        if (now_ms() > deadline || poll(&pfd, 1, 200) < 0)
            return -1;
        char b[512];
        ssize_t n = pfd.revents ? read(up_fd, b, sizeof(b)) : 0;
        if (pfd.revents && n <= 0)
            return -1; /* python died */
        if (n > 0)
            buf_append(&up_out, b, (size_t)n);
    }
    up_port = atoi(port + 5);
    const char *sha = strstr(buf_cstr(&up_out), "SSE ");
    if (!sha)
        return -1;
    memcpy(sse_sha, sha + 4, 64);
    fcntl(up_fd, F_SETFL, fcntl(up_fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

static int group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/corral-gw-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(log_path, sizeof(log_path), "%s/gateway.log", tmpdir);
    if (log_open(log_path, LOG_INFO) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return up_start();
}

static int group_teardown(void **state)
{
    if (up_pid > 0) {
        kill(up_pid, SIGTERM);
        waitpid(up_pid, NULL, 0);
    }
    close(up_fd);
    buf_deinit(&up_out);
    log_close();
    unlink(log_path);
    rmdir(tmpdir);
    return 0;
}

/* ---- loop helpers ---- */

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) holds or ms pass; returns pred(arg). */
static bool run_until(struct event_base *base, pred_fn pred, void *arg, int ms)
{
    bool expired = false;
    struct event *t = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!(pred && pred(arg)) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return pred ? pred(arg) : true;
}

/* ---- fixture: one loop, httpc and gateway ---- */

struct fx {
    struct event_base *base;
    struct config cfg;
    struct server srv;
    struct gateway *g;
    struct event *up_ev;
    char sock[100];
};

static char *url_of(const char *suffix)
{
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "http://127.0.0.1:%d%s", up_port, suffix);
    return buf_steal(&b, NULL);
}

/* upstream: a URL (owned by the fixture afterwards); key may be NULL. */
static struct fx *fx_new(char *upstream, const char *key)
{
    struct fx *f = xcalloc(1, sizeof(*f));
    f->base = event_base_new();
    config_defaults(&f->cfg);
    free(f->cfg.model_upstream_url);
    f->cfg.model_upstream_url = upstream;
    free(f->cfg.model_api_key);
    f->cfg.model_api_key = key ? xstrdup(key) : NULL;
    f->srv.base = f->base;
    f->srv.cfg = &f->cfg;
    f->srv.httpc = httpc_new(f->base, NULL);
    assert_non_null(f->srv.httpc);
    snprintf(f->sock, sizeof(f->sock), "%s/gw.sock", tmpdir);
    const char *err = NULL;
    f->g = gateway_open(&f->srv, "chat-1", f->sock, &err);
    if (!f->g)
        fail_msg("gateway_open: %s", err);
    f->up_ev = event_new(f->base, up_fd, EV_READ | EV_PERSIST, on_up_out, NULL);
    event_add(f->up_ev, NULL);
    return f;
}

static void fx_free(struct fx *f)
{
    gateway_close(f->g);
    httpc_free(f->srv.httpc);
    event_free(f->up_ev);
    event_base_free(f->base);
    config_deinit(&f->cfg);
    free(f);
}

static struct gateway_usage usage_of(struct fx *f)
{
    struct gateway_usage u;
    gateway_get_usage(f->g, &u);
    return u;
}

/* ---- a raw HTTP client on the loop ---- */

struct client {
    struct bufferevent *bev; /* NULL once we closed it */
    struct buf in;           /* every byte received */
    bool eof;                /* the gateway closed (or an error) */
    bool closed_by_us;
    const char *close_when; /* close once this text arrived */
    int64_t t_start, t_end; /* request sent; response complete */
    int64_t t_first_event;  /* "message_start" arrived */
    int64_t t_last_event;   /* "message_stop" arrived */
};

static void client_on_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    buf_reserve(&c->in, n);
    evbuffer_remove(in, c->in.data + c->in.len, n);
    /* Search only the new bytes (plus an overlap for a split word), or
     * a big answer makes this quadratic. */
    size_t from = c->in.len > 32 ? c->in.len - 32 : 0;
    c->in.len += n;
    c->in.data[c->in.len] = '\0';
    const char *p = c->in.data + from;
    size_t len = c->in.len - from;
    if (!c->t_first_event && memmem(p, len, "message_start", 13))
        c->t_first_event = now_ms();
    if (!c->t_last_event && memmem(p, len, "message_stop", 12))
        c->t_last_event = now_ms();
    if (c->close_when && memmem(p, len, c->close_when, strlen(c->close_when))) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        c->closed_by_us = true;
    }
}

static void client_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        c->eof = true;
}

static struct client *client_new(struct fx *f)
{
    struct client *c = xcalloc(1, sizeof(*c));
    buf_init(&c->in);
    c->bev = bufferevent_socket_new(f->base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
    bufferevent_setcb(c->bev, client_on_read, NULL, client_on_event, c);
    assert_int_equal(
        bufferevent_socket_connect(c->bev, (struct sockaddr *)&sa, sizeof(sa)),
        0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return c;
}

static void client_free(struct client *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    buf_deinit(&c->in);
    free(c);
}

static void client_send(struct client *c, const void *p, size_t n)
{
    bufferevent_write(c->bev, p, n);
}

/* Sends a request with a Content-Length body (none when body is NULL and
 * the method is GET). extra: more header lines, each ending in CRLF. */
static void send_req(struct client *c, const char *method, const char *target,
                     const char *extra, const void *body, size_t len)
{
    struct buf h;
    buf_init(&h);
    buf_printf(&h, "%s %s HTTP/1.1\r\nHost: localhost\r\n%s", method, target,
               extra ? extra : "");
    if (body || strcmp(method, "GET") != 0)
        buf_printf(&h, "Content-Length: %zu\r\n", len);
    buf_puts(&h, "\r\n");
    client_send(c, h.data, h.len);
    if (len)
        client_send(c, body, len);
    buf_deinit(&h);
    c->t_start = now_ms();
}

/* ---- response parsing ---- */

struct resp {
    int status;
    char *head;      /* status line and headers */
    struct buf body; /* de-chunked */
    bool chunked;
};

static void resp_free(struct resp *r)
{
    free(r->head);
    buf_deinit(&r->body);
    memset(r, 0, sizeof(*r));
}

/* Value of header name in r->head, copied to out; false when absent. */
static bool resp_header(const struct resp *r, const char *name, char *out,
                        size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2];
         p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, n, "%.*s", (int)strcspn(v, "\r"), v);
            return true;
        }
    }
    return false;
}

/* memmem over at most limit bytes: ASan's memmem checks the whole
 * haystack, which over a growing 32 MiB answer turns quadratic. */
static const char *find(const char *d, size_t n, const char *needle,
                        size_t limit)
{
    return memmem(d, n < limit ? n : limit, needle, strlen(needle));
}

/* body NULL: only check that the chunked body is complete. */
static int parse_chunks(const char *d, size_t n, struct buf *body)
{
    size_t off = 0;
    for (;;) {
        const char *eol = find(d + off, n - off, "\r\n", 64);
        if (!eol)
            return 0;
        size_t size = strtoul(d + off, NULL, 16);
        off = (size_t)(eol - d) + 2;
        if (size == 0)
            return n - off >= 2 && memcmp(d + off, "\r\n", 2) == 0 ? 1 : 0;
        if (n - off < size + 2)
            return 0;
        if (body)
            buf_append(body, d + off, size);
        off += size + 2;
    }
}

/* 1 when d holds a complete response (interim 100s skipped), else 0.
 * copy false: only check (r->body stays empty; no quadratic copying
 * while a big answer arrives). */
static int resp_scan(const char *d, size_t n, bool eof, struct resp *r,
                     bool copy)
{
    size_t off = 0;
    memset(r, 0, sizeof(*r));
    if (!d)
        return 0;
    for (;;) {
        const char *e = find(d + off, n - off, "\r\n\r\n", 65536);
        if (!e || n - off < 12)
            return 0;
        size_t hl = (size_t)(e - (d + off)) + 4;
        r->status = atoi(d + off + 9);
        if (r->status != 100) {
            r->head = xstrndup(d + off, hl);
            off += hl;
            break;
        }
        off += hl;
    }
    char v[64];
    int done;
    if (resp_header(r, "Transfer-Encoding", v, sizeof(v))) {
        r->chunked = true;
        done = parse_chunks(d + off, n - off, copy ? &r->body : NULL);
    } else if (resp_header(r, "Content-Length", v, sizeof(v))) {
        size_t len = strtoul(v, NULL, 10);
        done = n - off >= len;
        if (done && copy)
            buf_append(&r->body, d + off, len);
    } else {
        done = eof;
        if (copy)
            buf_append(&r->body, d + off, n - off);
    }
    if (!done)
        resp_free(r);
    return done;
}

static int resp_parse(const char *d, size_t n, bool eof, struct resp *r)
{
    return resp_scan(d, n, eof, r, true);
}

static bool pred_complete(void *arg)
{
    struct client *c = arg;
    struct resp r;
    if (!resp_scan(c->in.data, c->in.len, c->eof, &r, false))
        return c->eof; /* incomplete for good */
    resp_free(&r);
    if (!c->t_end)
        c->t_end = now_ms();
    return true;
}

/* Waits for a complete response and parses it (fails the test if none). */
static void wait_resp(struct fx *f, struct client *c, int ms, struct resp *r)
{
    if (!run_until(f->base, pred_complete, c, ms))
        fail_msg("no complete response in %d ms (%zu bytes)", ms, c->in.len);
    assert_int_equal(resp_parse(c->in.data, c->in.len, c->eof, r), 1);
}

static bool pred_eof(void *arg)
{
    return ((struct client *)arg)->eof;
}

/* ---- echo answers ---- */

static struct json_doc *parse_json(const struct buf *b)
{
    struct json_doc *doc = NULL;
    const char *err = NULL;
    if (json_parse(b->data, b->len, &json_default_limits, &doc, &err) != 0)
        fail_msg("not JSON (%s): %.200s", err, buf_cstr((struct buf *)b));
    return doc;
}

static char *jstr(const struct json_doc *doc, const char *path)
{
    char *s = json_str_dup(doc, json_path(doc, 0, path), NULL);
    if (!s)
        fail_msg("no string at %s", path);
    return s;
}

static int64_t jint(const struct json_doc *doc, const char *path)
{
    int64_t v = -1;
    if (json_get_int64(doc, json_path(doc, 0, path), &v) != 0)
        fail_msg("no integer at %s", path);
    return v;
}

/* How many headers named name the upstream saw; the last value to out. */
static int echo_header(const struct json_doc *doc, const char *name, char *out,
                       size_t n)
{
    int arr = json_get(doc, 0, "headers"), count = 0;
    for (int i = 0; i < json_len(doc, arr); i++) {
        int pair = json_at(doc, arr, i);
        char *k = json_str_dup(doc, json_at(doc, pair, 0), NULL);
        if (k && strcasecmp(k, name) == 0) {
            char *v = json_str_dup(doc, json_at(doc, pair, 1), NULL);
            if (out)
                snprintf(out, n, "%s", v ? v : "");
            free(v);
            count++;
        }
        free(k);
    }
    return count;
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256(p, n, d);
    for (int i = 0; i < CRYPTO_SHA256_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void assert_usage(struct fx *f, uint64_t req, uint64_t in, uint64_t out,
                         uint64_t cc, uint64_t cr)
{
    struct gateway_usage u = usage_of(f);
    assert_int_equal(u.requests, req);
    assert_int_equal(u.input_tokens, in);
    assert_int_equal(u.output_tokens, out);
    assert_int_equal(u.cache_creation_input_tokens, cc);
    assert_int_equal(u.cache_read_input_tokens, cr);
}

struct up_wait {
    const char *word;
    int count;
};

static bool pred_up(void *arg)
{
    struct up_wait *w = arg;
    up_read();
    return up_count(w->word) > w->count;
}

/* ---- tests: forwarding ---- */

#define CRED_HEADERS                                                           \
    "x-api-key: placeholder\r\nAuthorization: Bearer placeholder\r\n"

/* What the upstream saw of test_forward_echo's headers. */
static void check_forwarded_headers(const struct json_doc *doc, size_t body_len)
{
    char v[256];
    assert_int_equal(echo_header(doc, "x-api-key", v, sizeof(v)), 1);
    assert_string_equal(v, KEY);
    assert_int_equal(echo_header(doc, "authorization", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "x-drop-me", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "keep-alive", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "te", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "expect", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "x-custom", v, sizeof(v)), 1);
    assert_string_equal(v, "kept");
    assert_int_equal(echo_header(doc, "anthropic-version", v, sizeof(v)), 1);
    assert_string_equal(v, "2023-06-01");
    assert_int_equal(echo_header(doc, "content-type", v, sizeof(v)), 1);
    assert_string_equal(v, "application/json");
    assert_int_equal(echo_header(doc, "accept", v, sizeof(v)), 1);
    assert_string_equal(v, "application/json");
    assert_int_equal(echo_header(doc, "content-length", v, sizeof(v)), 1);
    assert_int_equal(atoi(v), (int)body_len);
}

/* Path, query, headers and body reach the upstream as the rules say; the
 * answer comes back with its headers; the connection is kept alive. */
static void test_forward_echo(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    const char *body = "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[]}";
    send_req(c, "POST", MSG_PATH,
             CRED_HEADERS
             "anthropic-version: 2023-06-01\r\n"
             "Content-Type: application/json\r\n"
             "Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\n"
             "Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Custom: kept\r\n"
             "Accept: application/json\r\n",
             body, strlen(body));
    struct resp r;
    wait_resp(f, c, 5000, &r);
    char v[256], sha[65];
    assert_int_equal(r.status, 200);
    assert_true(resp_header(&r, "X-Upstream", v, sizeof(v)));
    assert_string_equal(v, "echo");
    assert_true(resp_header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    assert_false(resp_header(&r, "Content-Length", v, sizeof(v)));
    assert_true(r.chunked);

    struct json_doc *doc = parse_json(&r.body);
    char *s = jstr(doc, "path");
    assert_string_equal(s, MSG_PATH);
    free(s);
    s = jstr(doc, "method");
    assert_string_equal(s, "POST");
    free(s);
    check_forwarded_headers(doc, strlen(body));
    assert_null(strstr(buf_cstr(&r.body), "placeholder"));
    assert_int_equal(jint(doc, "body_len"), (int64_t)strlen(body));
    sha_hex(body, strlen(body), sha);
    s = jstr(doc, "body_sha256");
    assert_string_equal(s, sha);
    free(s);
    json_doc_free(doc);
    resp_free(&r);
    assert_usage(f, 1, 11, 7, 3, 5);

    /* The same connection carries the next request. */
    buf_reset(&c->in);
    send_req(c, "GET", "/v1/models?limit=2", NULL, NULL, 0);
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 200);
    assert_false(c->eof);
    doc = parse_json(&r.body);
    s = jstr(doc, "path");
    assert_string_equal(s, "/v1/models?limit=2");
    free(s);
    s = jstr(doc, "method");
    assert_string_equal(s, "GET");
    free(s);
    assert_int_equal(jint(doc, "body_len"), 0);
    json_doc_free(doc);
    resp_free(&r);
    assert_usage(f, 2, 22, 14, 6, 10);
    client_free(c);
    fx_free(f);
}

/* Without a configured key no credential reaches the upstream at all. */
static void test_no_key(void **state)
{
    struct fx *f = fx_new(url_of(""), NULL);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, CRED_HEADERS, "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 200);
    struct json_doc *doc = parse_json(&r.body);
    assert_int_equal(echo_header(doc, "x-api-key", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "authorization", NULL, 0), 0);
    assert_null(strstr(buf_cstr(&r.body), "placeholder"));
    /* Nor any default of curl's: the client sent no Content-Type. */
    assert_int_equal(echo_header(doc, "content-type", NULL, 0), 0);
    assert_int_equal(echo_header(doc, "accept", NULL, 0), 0);
    json_doc_free(doc);
    resp_free(&r);
    client_free(c);
    fx_free(f);
}

/* An upstream URL with a path prefix joins it with the request target. */
static void test_path_prefix(void **state)
{
    struct fx *f = fx_new(url_of("/base/"), KEY);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, NULL, "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    struct json_doc *doc = parse_json(&r.body);
    char *s = jstr(doc, "path");
    assert_string_equal(s, "/base" MSG_PATH);
    free(s);
    json_doc_free(doc);
    resp_free(&r);
    client_free(c);
    fx_free(f);
}

static uint8_t *big_body(size_t n)
{
    uint8_t *b = xmalloc(n);
    assert_int_equal(crypto_random(b, n), 0);
    return b;
}

static void check_echo_body(struct resp *r, const void *body, size_t n)
{
    char sha[65];
    assert_int_equal(r->status, 200);
    struct json_doc *doc = parse_json(&r->body);
    assert_int_equal(jint(doc, "body_len"), (int64_t)n);
    sha_hex(body, n, sha);
    char *s = jstr(doc, "body_sha256");
    assert_string_equal(s, sha);
    free(s);
    json_doc_free(doc);
}

/* 5 MB bodies arrive byte-identical, by Content-Length and chunked. */
static void test_big_body(void **state)
{
    const size_t n = 5u << 20;
    uint8_t *body = big_body(n);
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, "Content-Type: application/octet-stream\r\n",
             body, n);
    struct resp r;
    wait_resp(f, c, 20000, &r);
    check_echo_body(&r, body, n);
    resp_free(&r);

    /* Chunked, with a chunk extension and a trailer. */
    buf_reset(&c->in);
    const char *head = "POST " MSG_PATH " HTTP/1.1\r\nHost: x\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    client_send(c, head, strlen(head));
    for (size_t off = 0; off < n; off += 65536) {
        size_t len = n - off < 65536 ? n - off : 65536;
        char line[64];
        int k = snprintf(line, sizeof(line), "%zx%s\r\n", len,
                         off == 0 ? ";ext=1" : "");
        client_send(c, line, (size_t)k);
        client_send(c, body + off, len);
        client_send(c, "\r\n", 2);
    }
    const char *end = "0\r\nX-Trailer: 1\r\n\r\n";
    client_send(c, end, strlen(end));
    wait_resp(f, c, 20000, &r);
    check_echo_body(&r, body, n);
    resp_free(&r);
    client_free(c);
    fx_free(f);
    free(body);
}

static bool pred_continue(void *arg)
{
    struct client *c = arg;
    return strstr(buf_cstr(&c->in), "HTTP/1.1 100 Continue\r\n\r\n") != NULL;
}

/* Expect: 100-continue is answered by the gateway before the body. */
static void test_expect_continue(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    const char *head = "POST " MSG_PATH " HTTP/1.1\r\nHost: x\r\n"
                       "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    client_send(c, head, strlen(head));
    assert_true(run_until(f->base, pred_continue, c, 5000));
    client_send(c, "hello", 5);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    check_echo_body(&r, "hello", 5);
    struct json_doc *doc = parse_json(&r.body);
    assert_int_equal(echo_header(doc, "expect", NULL, 0), 0);
    json_doc_free(doc);
    resp_free(&r);
    client_free(c);
    fx_free(f);
}

/* ---- tests: streaming ---- */

static void send_sse_req(struct client *c, const char *mode)
{
    char extra[128];
    snprintf(extra, sizeof(extra),
             CRED_HEADERS "X-Test-Mode: %s\r\nAccept: text/event-stream\r\n",
             mode);
    const char *body = "{\"stream\":true}";
    send_req(c, "POST", MSG_PATH, extra, body, strlen(body));
}

static void check_sse(struct client *c, struct resp *r)
{
    char v[128], sha[65];
    assert_int_equal(r->status, 200);
    assert_true(resp_header(r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/event-stream");
    assert_true(resp_header(r, "Cache-Control", v, sizeof(v)));
    assert_true(r->chunked);
    sha_hex(r->body.data, r->body.len, sha);
    assert_string_equal(sha, sse_sha); /* byte-identical */
    /* The upstream spreads the stream over 0.75 s: the first event must
     * reach the client well before the last one is sent. */
    assert_true(c->t_first_event > 0 && c->t_last_event > 0);
    assert_true(c->t_last_event - c->t_first_event >= 450);
}

static void test_sse_stream(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    send_sse_req(c, "sse");
    struct resp r;
    wait_resp(f, c, 5000, &r);
    check_sse(c, &r);
    resp_free(&r);
    assert_usage(f, 1, 25, 42, 4, 9);
    client_free(c);
    fx_free(f);
}

struct two {
    struct client *a, *b;
};

static bool pred_both(void *arg)
{
    struct two *t = arg;
    return pred_complete(t->a) && pred_complete(t->b);
}

/* Two streams through one gateway at once. */
static void test_concurrent_streams(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct two t = {client_new(f), client_new(f)};
    send_sse_req(t.a, "sse");
    send_sse_req(t.b, "sse");
    assert_true(run_until(f->base, pred_both, &t, 8000));
    /* Each stream spans 0.75 s; one after the other they would not
     * overlap at all. */
    int64_t lo = t.a->t_first_event > t.b->t_first_event ? t.a->t_first_event
                                                         : t.b->t_first_event;
    int64_t hi = t.a->t_last_event < t.b->t_last_event ? t.a->t_last_event
                                                       : t.b->t_last_event;
    assert_true(hi - lo >= 300);
    struct resp r;
    assert_int_equal(resp_parse(t.a->in.data, t.a->in.len, false, &r), 1);
    check_sse(t.a, &r);
    resp_free(&r);
    assert_int_equal(resp_parse(t.b->in.data, t.b->in.len, false, &r), 1);
    check_sse(t.b, &r);
    resp_free(&r);
    assert_usage(f, 2, 50, 84, 8, 18);
    client_free(t.a);
    client_free(t.b);
    fx_free(f);
}

/* Flow control: a client that stops reading stops the upstream (the
 * gateway pauses the transfer instead of buffering 32 MiB); reading
 * again resumes it and every byte arrives in order. */
static void test_backpressure(void **state)
{
    const size_t n = 32u << 20;
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    struct up_wait w = {"SENT big", up_count("SENT big")};
    send_req(c, "GET", MSG_PATH, "X-Test-Mode: big\r\n", NULL, 0);
    bufferevent_disable(c->bev, EV_READ);
    assert_false(run_until(f->base, pred_up, &w, 2000));
    bufferevent_enable(c->bev, EV_READ);
    struct resp r;
    wait_resp(f, c, 30000, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, n);
    bool same = true;
    for (size_t i = 0; i < n && same; i++)
        same = (uint8_t)r.body.data[i] == (uint8_t)(i & 0xff);
    assert_true(same);
    resp_free(&r);
    assert_true(run_until(f->base, pred_up, &w, 5000));
    client_free(c);
    fx_free(f);
}

/* A gzip answer is decoded on the way: metering sees JSON, and so does
 * the client, without Content-Encoding. */
static void test_gzip_decoded(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH,
             "X-Test-Mode: gzip\r\nAccept-Encoding: gzip\r\n", "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    char v[64];
    assert_int_equal(r.status, 200);
    assert_false(resp_header(&r, "Content-Encoding", v, sizeof(v)));
    struct json_doc *doc = parse_json(&r.body);
    json_doc_free(doc);
    resp_free(&r);
    assert_usage(f, 1, 11, 7, 3, 5);
    client_free(c);
    fx_free(f);
}

/* ---- tests: errors ---- */

/* 429 passes through with its status, headers and body. */
static void test_429_passthrough(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, "X-Test-Mode: 429\r\n", "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    char v[64];
    assert_int_equal(r.status, 429);
    assert_true(resp_header(&r, "retry-after", v, sizeof(v)));
    assert_string_equal(v, "7");
    assert_true(resp_header(&r, "anthropic-ratelimit-requests-remaining", v,
                            sizeof(v)));
    assert_string_equal(v, "0");
    struct json_doc *doc = parse_json(&r.body);
    char *s = jstr(doc, "error.type");
    assert_string_equal(s, "rate_limit_error");
    free(s);
    json_doc_free(doc);
    resp_free(&r);
    assert_false(c->eof);
    client_free(c);
    fx_free(f);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void check_502(struct resp *r, const char *needle)
{
    char v[64];
    assert_int_equal(r->status, 502);
    assert_true(resp_header(r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    struct json_doc *doc = parse_json(&r->body);
    char *s = jstr(doc, "type");
    assert_string_equal(s, "error");
    free(s);
    s = jstr(doc, "error.type");
    assert_string_equal(s, "api_error");
    free(s);
    s = jstr(doc, "error.message");
    if (!strstr(s, needle))
        fail_msg("message \"%s\" lacks \"%s\"", s, needle);
    free(s);
    json_doc_free(doc);
}

/* Connection refused: 502 with an Anthropic-style body; the connection
 * stays usable. */
static void test_upstream_down(void **state)
{
    struct buf u;
    buf_init(&u);
    buf_printf(&u, "http://127.0.0.1:%d", free_port());
    struct fx *f = fx_new(buf_steal(&u, NULL), KEY);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, NULL, "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    check_502(&r, "upstream");
    resp_free(&r);
    buf_reset(&c->in);
    send_req(c, "POST", MSG_PATH, NULL, "{}", 2);
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 502);
    resp_free(&r);
    assert_int_equal(usage_of(f).requests, 2);
    client_free(c);
    fx_free(f);
}

/* An upstream that never answers: 502 after the request timeout. */
static void test_upstream_timeout(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    gateway_set_timeouts(f->g, 2000, 400);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, "X-Test-Mode: hang\r\n", "{}", 2);
    struct resp r;
    wait_resp(f, c, 3000, &r);
    check_502(&r, "timed out");
    assert_true(c->t_end - c->t_start < 2000);
    resp_free(&r);
    client_free(c);
    fx_free(f);
}

/* The upstream closes mid-answer: the client gets the head and what
 * arrived, then a close without the final chunk (an incomplete answer). */
static void test_upstream_closes_mid_response(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, "X-Test-Mode: close\r\n", "{}", 2);
    assert_true(run_until(f->base, pred_eof, c, 5000));
    assert_non_null(strstr(buf_cstr(&c->in), "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf_cstr(&c->in), "{\"partial\": \"xxx"));
    struct resp r;
    assert_int_equal(resp_parse(c->in.data, c->in.len, true, &r), 0);
    client_free(c);
    fx_free(f);
}

/* Malformed requests get a 400 in the API's error shape and a close. */
static void test_bad_requests(void **state)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 2\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nX-Fold: a\r\n  b\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
    };
    static const int want[] = {400, 400, 400, 400, 413};
    struct fx *f = fx_new(url_of(""), KEY);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct client *c = client_new(f);
        client_send(c, bad[i], strlen(bad[i]));
        struct resp r;
        wait_resp(f, c, 5000, &r);
        assert_int_equal(r.status, want[i]);
        struct json_doc *doc = parse_json(&r.body);
        char *s = jstr(doc, "type");
        assert_string_equal(s, "error");
        free(s);
        json_doc_free(doc);
        resp_free(&r);
        assert_true(run_until(f->base, pred_eof, c, 2000));
        client_free(c);
    }
    assert_int_equal(usage_of(f).requests, 0);
    fx_free(f);
}

/* ---- tests: budget hooks ---- */

struct meter_log {
    struct gateway_usage sum; /* every delta added up */
    int calls;
    char model[64]; /* of the last call */
};

static void on_meter(void *arg, const char *model,
                     const struct gateway_usage *d)
{
    struct meter_log *m = arg;
    m->sum.input_tokens += d->input_tokens;
    m->sum.output_tokens += d->output_tokens;
    m->sum.cache_creation_input_tokens += d->cache_creation_input_tokens;
    m->sum.cache_read_input_tokens += d->cache_read_input_tokens;
    assert_true(d->input_tokens || d->output_tokens ||
                d->cache_creation_input_tokens || d->cache_read_input_tokens);
    m->calls++;
    snprintf(m->model, sizeof(m->model), "%s", model);
}

static void assert_meter_matches(struct fx *f, const struct meter_log *m)
{
    struct gateway_usage u = usage_of(f);
    assert_int_equal(m->sum.input_tokens, u.input_tokens);
    assert_int_equal(m->sum.output_tokens, u.output_tokens);
    assert_int_equal(m->sum.cache_creation_input_tokens,
                     u.cache_creation_input_tokens);
    assert_int_equal(m->sum.cache_read_input_tokens, u.cache_read_input_tokens);
}

/* The meter callback sees every increment with the answer's model: JSON
 * (one usage object) and SSE (message_start, then message_delta). */
static void test_meter_callback(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct meter_log m = {0};
    gateway_set_meter(f->g, on_meter, &m);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, NULL, "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(m.calls, 1);
    assert_string_equal(m.model, "claude-test-echo");
    assert_meter_matches(f, &m);
    assert_usage(f, 1, 11, 7, 3, 5);

    buf_reset(&c->in);
    send_sse_req(c, "sse");
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(m.calls, 3);
    assert_string_equal(m.model, "claude-test-sse");
    assert_meter_matches(f, &m);
    assert_usage(f, 2, 36, 49, 7, 14);
    client_free(c);
    fx_free(f);
}

/* A refused request: 402 with the Anthropic error shape; the connection
 * stays usable. */
static void expect_refused(struct fx *f, struct client *c, const char *msg)
{
    struct resp r;
    char v[128];
    buf_reset(&c->in);
    send_sse_req(c, "sse");
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 402);
    assert_true(resp_header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    struct json_doc *doc = parse_json(&r.body);
    char *s = jstr(doc, "type");
    assert_string_equal(s, "error");
    free(s);
    s = jstr(doc, "error.type");
    assert_string_equal(s, "billing_error");
    free(s);
    s = jstr(doc, "error.message");
    assert_string_equal(s, msg);
    free(s);
    json_doc_free(doc);
    resp_free(&r);
    assert_false(c->eof);
}

/* While refusing, requests never reach the upstream and are counted;
 * once the refusal is lifted, forwarding resumes. */
static void test_refuse(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    up_read();
    int seen = up_count("REQUEST ");
    assert_int_equal(gateway_refusals(f->g), 0);
    gateway_set_refuse(f->g, true, "monthly budget reached (10 USD)");
    expect_refused(f, c, "monthly budget reached (10 USD)");
    expect_refused(f, c, "monthly budget reached (10 USD)");
    assert_int_equal(gateway_refusals(f->g), 2);
    assert_usage(f, 0, 0, 0, 0, 0);
    /* Give a stray forward time to show up at the upstream. */
    run_until(f->base, NULL, NULL, 300);
    up_read();
    assert_int_equal(up_count("REQUEST "), seen);

    gateway_set_refuse(f->g, false, NULL);
    struct up_wait w = {"REQUEST ", seen};
    buf_reset(&c->in);
    send_sse_req(c, "sse");
    struct resp r;
    wait_resp(f, c, 5000, &r);
    check_sse(c, &r);
    resp_free(&r);
    assert_true(run_until(f->base, pred_up, &w, 2000));
    assert_int_equal(up_count("REQUEST "), seen + 1);
    assert_int_equal(gateway_refusals(f->g), 2);
    assert_usage(f, 1, 25, 42, 4, 9);
    client_free(c);
    fx_free(f);
}

/* ---- tests: life cycle ---- */

static bool pred_first_event(void *arg)
{
    return ((struct client *)arg)->t_first_event > 0;
}

/* The client disconnects mid-stream: the upstream request is cancelled
 * (the upstream sees its connection close); usage so far is kept. */
static void test_client_disconnect_cancels(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    struct up_wait w = {"CLOSED slow", up_count("CLOSED slow")};
    c->close_when = "message_start";
    send_sse_req(c, "slow");
    assert_true(run_until(f->base, pred_first_event, c, 5000));
    assert_true(c->closed_by_us);
    assert_true(run_until(f->base, pred_up, &w, 5000));
    assert_usage(f, 1, 25, 1, 4, 9);
    /* The gateway still serves. */
    struct client *c2 = client_new(f);
    send_req(c2, "POST", MSG_PATH, NULL, "{}", 2);
    struct resp r;
    wait_resp(f, c2, 5000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    client_free(c2);
    client_free(c);
    fx_free(f);
}

/* gateway_close with a stream in flight: the client sees the close, the
 * upstream request is cancelled, and nothing leaks (ASan). */
static void test_close_in_flight(void **state)
{
    struct fx *f = fx_new(url_of(""), KEY);
    struct client *c = client_new(f);
    struct client *idle = client_new(f);
    struct up_wait w = {"CLOSED slow", up_count("CLOSED slow")};
    send_sse_req(c, "slow");
    assert_true(run_until(f->base, pred_first_event, c, 5000));
    gateway_close(f->g);
    f->g = NULL;
    struct stat st;
    assert_int_not_equal(lstat(f->sock, &st), 0); /* removed */
    assert_true(run_until(f->base, pred_eof, c, 2000));
    assert_true(run_until(f->base, pred_eof, idle, 2000));
    assert_true(run_until(f->base, pred_up, &w, 5000));
    client_free(c);
    client_free(idle);
    fx_free(f);
}

static void make_stale_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

/* The socket is mode 0600 whatever the umask, a stale one is replaced,
 * another kind of file is refused, and close removes it. */
static void test_socket_file(void **state)
{
    mode_t old = umask(0);
    struct fx *f = fx_new(url_of(""), KEY);
    umask(old);
    struct stat st;
    assert_int_equal(lstat(f->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    gateway_close(f->g);
    f->g = NULL;
    assert_int_not_equal(lstat(f->sock, &st), 0);

    const char *err = NULL;
    make_stale_socket(f->sock);
    f->g = gateway_open(&f->srv, "chat-1", f->sock, &err);
    assert_non_null(f->g);
    assert_int_equal(lstat(f->sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct client *c = client_new(f);
    send_req(c, "POST", MSG_PATH, NULL, "{}", 2);
    struct resp r;
    wait_resp(f, c, 5000, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    client_free(c);
    gateway_close(f->g);
    f->g = NULL;

    int fd = open(f->sock, O_CREAT | O_WRONLY, 0600);
    close(fd);
    assert_null(gateway_open(&f->srv, "chat-1", f->sock, &err));
    assert_non_null(err);
    assert_int_equal(lstat(f->sock, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    unlink(f->sock);
    fx_free(f);
}

/* The request log has method, path without query, status and tokens,
 * and never the key. Runs after the tests above. */
static void test_log_redacts(void **state)
{
    FILE *fp = fopen(log_path, "r");
    assert_non_null(fp);
    struct buf b;
    buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        buf_append(&b, chunk, n);
    fclose(fp);
    const char *s = buf_cstr(&b);
    assert_non_null(strstr(s, "\"msg\":\"gateway request\""));
    assert_non_null(strstr(s, "\"path\":\"/v1/messages\""));
    assert_non_null(strstr(s, "\"output_tokens\":42"));
    assert_non_null(strstr(s, "\"status\":429"));
    assert_null(strstr(s, "beta=true"));
    assert_null(strstr(s, KEY));
    assert_null(strstr(s, "placeholder"));
    buf_deinit(&b);
}

/* ---- tests: httpc directly ---- */

struct hc {
    struct httpc *h;
    struct httpc_req *r;
    int heads, bodies, dones;
    int status;
    char err[256];
    bool cancel_on_body;
    bool free_on_head;
    struct buf body;
};

static void hc_head(void *arg, int status, const char *h, size_t len)
{
    struct hc *x = arg;
    x->heads++;
    x->status = status;
    if (x->free_on_head)
        httpc_free(x->h); /* deferred until the callback stack unwinds */
}

static void hc_body(void *arg, const char *d, size_t len)
{
    struct hc *x = arg;
    x->bodies++;
    buf_append(&x->body, d, len);
    if (x->cancel_on_body)
        httpc_cancel(x->r);
}

static void hc_done(void *arg, const char *err)
{
    struct hc *x = arg;
    x->dones++;
    snprintf(x->err, sizeof(x->err), "%s", err ? err : "");
}

static const struct httpc_cbs hc_cbs = {hc_head, hc_body, hc_done};

static bool pred_done(void *arg)
{
    return ((struct hc *)arg)->dones > 0;
}

static void test_httpc_resolve_and_callbacks(void **state)
{
    char **res = NULL;
    const char *err = NULL;
    assert_int_equal(httpc_resolve_url("http://127.0.0.1:1/x", &res, &err), 0);
    assert_int_equal(httpc_resolve_url("https://localhost/", &res, &err), 0);
    assert_null(res); /* literals need no entry */
    assert_int_not_equal(httpc_resolve_url("not a url", &res, &err), 0);
    assert_non_null(err);

    /* A name only CURLOPT_RESOLVE knows proves the list is used. */
    char entry[64];
    snprintf(entry, sizeof(entry), "upstream.invalid:%d:127.0.0.1", up_port);
    const char *const list[] = {entry, NULL};
    struct event_base *base = event_base_new();
    struct hc x = {.h = httpc_new(base, list)};
    buf_init(&x.body);
    char url[96];
    snprintf(url, sizeof(url), "http://upstream.invalid:%d/v1/x?q=1", up_port);
    const char *hdrs[] = {"X-Test-Mode: slow", NULL};
    struct httpc_req_opts o = {.method = "POST",
                               .url = url,
                               .headers = hdrs,
                               .body = "{}",
                               .body_len = 2,
                               .timeout_ms = 10000,
                               .connect_timeout_ms = 2000};
    x.cancel_on_body = true; /* cancel from inside on_body */
    x.r = httpc_request(x.h, &o, &hc_cbs, &x);
    assert_non_null(x.r);
    assert_true(run_until(base, pred_done, &x, 5000));
    run_until(base, NULL, NULL, 200); /* exactly once: nothing more */
    assert_int_equal(x.heads, 1);
    assert_int_equal(x.status, 200);
    assert_int_equal(x.bodies, 1);
    assert_int_equal(x.dones, 1);
    assert_string_equal(x.err, "cancelled");

    /* httpc_free from inside on_head: deferred, on_done still once. */
    struct hc y = {.h = x.h, .free_on_head = true};
    buf_init(&y.body);
    hdrs[0] = "X-Test-Mode: echo";
    y.r = httpc_request(y.h, &o, &hc_cbs, &y);
    assert_true(run_until(base, pred_done, &y, 5000));
    assert_int_equal(y.heads, 1);
    assert_int_equal(y.dones, 1);
    assert_string_equal(y.err, "cancelled");
    buf_deinit(&x.body);
    buf_deinit(&y.body);
    event_base_free(base);
}

/* httpc_free with a request in flight: on_done("cancelled") once. */
static void test_httpc_free_in_flight(void **state)
{
    struct event_base *base = event_base_new();
    struct hc x = {.h = httpc_new(base, NULL)};
    buf_init(&x.body);
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", up_port);
    const char *hdrs[] = {"X-Test-Mode: slow", NULL};
    struct httpc_req_opts o = {
        .method = "GET", .url = url, .headers = hdrs, .timeout_ms = 10000};
    x.r = httpc_request(x.h, &o, &hc_cbs, &x);
    bool got = false;
    for (int64_t end = now_ms() + 5000; !got && now_ms() < end;) {
        event_base_loop(base, EVLOOP_ONCE);
        got = x.bodies > 0;
    }
    assert_true(got);
    httpc_free(x.h);
    assert_int_equal(x.dones, 1);
    assert_string_equal(x.err, "cancelled");
    buf_deinit(&x.body);
    event_base_free(base);
}

int main(void)
{
    /* CMOCKA_TEST_FILTER=<glob> runs a subset (debugging). */
    if (getenv("CMOCKA_TEST_FILTER"))
        cmocka_set_test_filter(getenv("CMOCKA_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_echo),
        cmocka_unit_test(test_no_key),
        cmocka_unit_test(test_path_prefix),
        cmocka_unit_test(test_big_body),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_sse_stream),
        cmocka_unit_test(test_concurrent_streams),
        cmocka_unit_test(test_gzip_decoded),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_429_passthrough),
        cmocka_unit_test(test_upstream_down),
        cmocka_unit_test(test_upstream_timeout),
        cmocka_unit_test(test_upstream_closes_mid_response),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_meter_callback),
        cmocka_unit_test(test_refuse),
        cmocka_unit_test(test_client_disconnect_cancels),
        cmocka_unit_test(test_close_in_flight),
        cmocka_unit_test(test_socket_file),
        cmocka_unit_test(test_log_redacts),
        cmocka_unit_test(test_httpc_resolve_and_callbacks),
        cmocka_unit_test(test_httpc_free_in_flight),
    };
    return cmocka_run_group_tests_name("gateway", tests, group_setup,
                                       group_teardown);
}
