/* Downloads with backpressure (include/corral/files.h). The socket is
 * taken from evhtp (req_take_connection); a write callback with a low
 * watermark asks for more only once the kernel took what was queued. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "corral/files.h"
#include "corral/http.h"
#include "corral/mem.h"
#include "corral/server.h"

#define OUT_LOW (64 * 1024)
#define OUT_HIGH (256 * 1024)
#define CHUNK (64 * 1024)

struct stream_out {
    struct bufferevent *bev;  /* NULL once the client side is closed */
    int fd;                   /* file or pipe; -1 once closed */
    struct event *rd;         /* pipe: readable again */
    bool chunked;             /* pipe: chunked framing */
    bool eof;                 /* fd ended */
    bool child_pending;       /* pipe: the child's status is still due */
    int child_status;
};

static void maybe_free(struct stream_out *s)
{
    if (s->bev || s->child_pending)
        return;
    if (s->rd)
        event_free(s->rd);
    free(s);
}

static void close_client(struct stream_out *s)
{
    if (s->bev)
        bufferevent_free(s->bev);
    s->bev = NULL;
    if (s->fd >= 0)
        close(s->fd); /* a child writing to it gets EPIPE */
    s->fd = -1;
    if (s->rd)
        event_del(s->rd);
    maybe_free(s);
}

/* Everything sent: close once the output has drained. */
static void finish(struct stream_out *s)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    if (s->chunked) {
        if (s->child_pending)
            return; /* the last chunk waits for the child's verdict */
        if (s->child_status != 0) {
            close_client(s); /* no final chunk: the client sees a cut */
            return;
        }
        evbuffer_add(out, "0\r\n\r\n", 5);
        s->chunked = false;
    }
    if (evbuffer_get_length(out) == 0) {
        close_client(s);
        return;
    }
    bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
}

static void pump(struct stream_out *s)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    char buf[CHUNK];
    while (!s->eof && evbuffer_get_length(out) < OUT_HIGH) {
        ssize_t n = read(s->fd, buf, sizeof(buf));
        if (n > 0) {
            if (s->chunked)
                evbuffer_add_printf(out, "%zx\r\n", (size_t)n);
            evbuffer_add(out, buf, (size_t)n);
            if (s->chunked)
                evbuffer_add(out, "\r\n", 2);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            event_add(s->rd, NULL); /* a pipe: wait for the child */
            return;
        }
        if (n < 0)
            s->child_status = -1; /* a read error fails the stream */
        s->eof = true;
    }
    if (s->eof)
        finish(s);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct stream_out *s = arg;
    if (s->eof)
        finish(s);
    else
        pump(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    close_client(arg); /* the client left or the socket failed */
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct stream_out *s = arg;
    if (s->bev)
        pump(s);
}

static struct stream_out *start(struct req *r, int fd,
                                const char *content_type, bool pipe)
{
    struct event_base *base = r->srv->base;
    bool head = r->method == HTTP_HEAD; /* r is gone after the take */
    struct bufferevent *bev = req_take_connection(r, 200, content_type);
    struct stream_out *s = xcalloc(1, sizeof(*s));
    s->fd = fd;
    s->bev = bev;
    s->chunked = pipe;
    s->child_pending = pipe;
    if (pipe)
        s->rd = event_new(base, fd, EV_READ, on_readable, s);
    if (!bev) { /* the client already left */
        close_client(s);
        return s;
    }
    if (head) { /* the headers only; a child gets EPIPE */
        close(s->fd);
        s->fd = -1;
        s->eof = true;
        s->chunked = false;
    }
    bufferevent_setwatermark(bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_setcb(bev, NULL, on_write, on_event, s);
    bufferevent_enable(bev, EV_WRITE);
    pump(s);
    return s;
}

void stream_out_file(struct req *r, int fd, uint64_t size,
                     const char *content_type)
{
    char len[32];
    snprintf(len, sizeof(len), "%llu", (unsigned long long)size);
    req_add_header(r, "Content-Length", len);
    start(r, fd, content_type, false);
}

struct stream_out *stream_out_pipe(struct req *r, int pipe_fd,
                                   const char *content_type)
{
    req_add_header(r, "Transfer-Encoding", "chunked");
    return start(r, pipe_fd, content_type, true);
}

void stream_out_child_done(struct stream_out *s, int status)
{
    s->child_pending = false;
    s->child_status = status;
    if (!s->bev) {
        maybe_free(s);
        return;
    }
    if (s->eof)
        finish(s);
}

/* Content-Disposition with the name as a quoted string and RFC 8187. */
void stream_out_disposition(struct req *r, const char *name)
{
    struct buf h;
    buf_init(&h);
    buf_puts(&h, "attachment; filename=\"");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        buf_putc(&h, (*p < 0x80 && *p != '"' && *p != '\\') ? (char)*p
                                                             : '_');
    buf_puts(&h, "\"; filename*=UTF-8''");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            buf_putc(&h, (char)*p);
        else
            buf_printf(&h, "%%%02X", *p);
    }
    req_add_header(r, "Content-Disposition", buf_cstr(&h));
    buf_deinit(&h);
}

