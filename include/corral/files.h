/* files: helpers of the attachments and workspace files API.
 *
 * child_*: a host child process (tar, rm) started with posix_spawn and
 * reaped through a pidfd on the loop; never a shell built from input.
 *
 * stream_out_*: sends a file or a child's pipe to a client with
 * backpressure: the next chunk is read only when the socket has taken the
 * previous ones (the output buffer fell under a low watermark), so a
 * slow client holds at most about 256 KiB of ours, whatever the size. */
#ifndef CORRAL_FILES_H
#define CORRAL_FILES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct req;

/* Answers r with 200 and the bytes of fd (a regular file, size bytes;
 * taken: closed when done), with content_type and the headers added to
 * r so far. Content-Length is set; the connection closes after. */
void stream_out_file(struct req *r, int fd, uint64_t size,
                     const char *content_type);
/* Answers r with 200 and a chunked body read from pipe_fd (taken), the
 * stdout of a child (child.h). The final chunk is sent only
 * when the pipe ended and stream_out_child_done reported status 0 for
 * it; otherwise the connection is cut, so a client sees a failure. The
 * handle is for stream_out_child_done; the stream frees itself. */
struct stream_out;
struct stream_out *stream_out_pipe(struct req *r, int pipe_fd,
                                   const char *content_type);
void stream_out_child_done(struct stream_out *s, int status);
/* Adds Content-Disposition: attachment with name (quoted ASCII fallback
 * and RFC 8187 filename*). */
void stream_out_disposition(struct req *r, const char *name);

#endif
