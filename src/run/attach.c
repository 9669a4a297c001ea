/* A message's attachments in its run (attach.h).
 *
 * Copy: for each file, in order, a name is reserved in the workspace's
 * attachments/ folder with O_CREAT | O_EXCL | O_NOFOLLOW ("name (2).ext"
 * when taken), then `cat` in a child process copies the blob into it
 * (the blob as its fd 3, the new file as its stdout): no byte is copied
 * on the loop, and since the sandbox can write the workspace, nothing
 * there is opened by a path the host follows (the folder is opened
 * beneath the root with wspath, the file through the folder's fd).
 *
 * Images: png, jpeg, gif and webp files up to ATTACH_IMAGE_MAX, while
 * the message's images stay under ATTACH_IMAGES_TOTAL (the model API
 * takes requests of about 32 MB), are read from the blob store and
 * base64-encoded ATTACH_SLICE bytes per loop iteration. */
#include "attach.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chats_int.h"
#include "corral/api.h"
#include "corral/base64.h"
#include "corral/cli_proc.h"
#include "corral/child.h"
#include "corral/files.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/sandbox.h"
#include "corral/server.h"
#include "corral/wspath.h"
#include "turn.h"

#define ATTACH_DIR "attachments"
#define ATTACH_IMAGE_MAX ((int64_t)5 << 20)
#define ATTACH_IMAGES_TOTAL ((int64_t)20 << 20)
#define ATTACH_SLICE (3 * 64 * 1024) /* a multiple of 3: no padding */
#define ATTACH_NAME_TRIES 1000

struct att_file {
    char *id;
    char *filename; /* as uploaded */
    char *content_type;
    char sha256[65];
    int64_t size;
    char name[WSPATH_NAME_MAX + 1]; /* in attachments/, once placed */
    bool image;                     /* sent as an image block */
    struct buf b64; /* its data as a JSON string (base64 needs no
                       escaping), once encoded */
};

struct run_attach {
    struct att_file *files;
    int n;
    void (*done)(struct run *run);
    int next;            /* the file being copied, then encoded */
    int dirfd;           /* attachments/, while copying */
    int destfd;          /* the file being copied into */
    int blobfd;          /* the image being encoded */
    int64_t offset;      /* bytes of it encoded */
    struct event *slice; /* the next encoding slice */
};

static void att_file_deinit(struct att_file *f)
{
    free(f->id);
    free(f->filename);
    free(f->content_type);
    buf_deinit(&f->b64);
}

void attach_free(struct run_attach *att)
{
    if (!att)
        return;
    for (int i = 0; i < att->n; i++)
        att_file_deinit(&att->files[i]);
    free(att->files);
    if (att->dirfd >= 0)
        close(att->dirfd);
    if (att->destfd >= 0)
        close(att->destfd);
    if (att->blobfd >= 0)
        close(att->blobfd);
    if (att->slice)
        event_free(att->slice);
    free(att);
}

static bool is_image_type(const char *t)
{
    return !strcmp(t, "image/png") || !strcmp(t, "image/jpeg") ||
           !strcmp(t, "image/gif") || !strcmp(t, "image/webp");
}

static bool valid_sha(const char *s)
{
    return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* One object {id, filename, content_type, size, sha256}; false if a
 * field is missing or not what the store writes. */
static bool load_file(const struct json_doc *d, int obj, struct att_file *f)
{
    char *sha = json_str_dup(d, json_get(d, obj, "sha256"), NULL);
    f->id = json_str_dup(d, json_get(d, obj, "id"), NULL);
    f->filename = json_str_dup(d, json_get(d, obj, "filename"), NULL);
    f->content_type = json_str_dup(d, json_get(d, obj, "content_type"), NULL);
    buf_init(&f->b64);
    bool ok = sha && valid_sha(sha) && f->id && f->filename &&
              f->content_type &&
              json_get_int64(d, json_get(d, obj, "size"), &f->size) == 0 &&
              f->size >= 0;
    if (ok)
        memcpy(f->sha256, sha, sizeof(f->sha256));
    free(sha);
    return ok;
}

bool attach_load(struct run *run, const char *json)
{
    struct json_doc *d = NULL;
    if (!json || json_parse(json, strlen(json), NULL, &d, NULL) != JSON_OK)
        return false;
    int n = json_type(d, 0) == JSON_ARRAY ? json_len(d, 0) : -1;
    bool ok = n >= 0;
    if (n > 0) {
        struct run_attach *att = xcalloc(1, sizeof(*att));
        att->files = xcalloc((size_t)n, sizeof(*att->files));
        att->dirfd = att->destfd = att->blobfd = -1;
        for (int i = 0; i < n && ok; i++, att->n++)
            ok = load_file(d, json_at(d, 0, i), &att->files[i]);
        if (ok)
            run->att = att;
        else
            attach_free(att);
    }
    json_doc_free(d);
    return ok;
}

/* ---- the end of the work ---- */

static struct server *run_srv(struct run *run)
{
    return run->chat->reg->srv;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Ends the work: done on success (detail NULL), else the run fails. The
 * reference taken by attach_prepare goes last. */
static void finish(struct run *run, const char *detail)
{
    struct run_attach *att = run->att;
    close_fd(&att->dirfd);
    close_fd(&att->destfd);
    close_fd(&att->blobfd);
    if (!run_is_current(run))
        ; /* interrupted, timed out, deleted: end_run already ran */
    else if (detail)
        end_run(run, RUN_PHASE_FAILED, "sandbox_failed", detail);
    else
        att->done(run);
    run_release(run);
}

static void failf(struct run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void failf(struct run *run, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    log_warn("run %s: %s", run->spec.run_id, detail);
    finish(run, detail);
}

/* ---- encoding the images, a slice per loop iteration ---- */

static void encode_next(struct run *run);

static void on_slice(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    struct run_attach *att = run->att;
    struct att_file *f = &att->files[att->next];
    if (!run_is_current(run)) {
        finish(run, NULL);
        return;
    }
    char *chunk = xmalloc(ATTACH_SLICE);
    ssize_t got = pread(att->blobfd, chunk, ATTACH_SLICE, att->offset);
    if (got > 0)
        base64_encode(&f->b64, chunk, (size_t)got);
    free(chunk);
    if (got < 0) {
        failf(run, "attachment %s: reading its stored bytes failed: %s",
              f->filename, strerror(errno));
        return;
    }
    att->offset += got;
    if (got > 0 && att->offset < f->size) {
        struct timeval now = {0, 0};
        evtimer_add(att->slice, &now);
        return;
    }
    close_fd(&att->blobfd);
    buf_putc(&f->b64, '"');
    if (att->offset != f->size) {
        failf(run, "attachment %s: %s", f->filename,
              "its stored bytes are shorter than its size");
        return;
    }
    att->next++;
    encode_next(run);
}

/* Starts the next image (or calls done when none is left). */
static void encode_next(struct run *run)
{
    struct run_attach *att = run->att;
    while (att->next < att->n && !att->files[att->next].image)
        att->next++;
    if (att->next == att->n) {
        finish(run, NULL);
        return;
    }
    struct att_file *f = &att->files[att->next];
    char path[600];
    attach_blob_path(run_srv(run)->cfg->data_dir, f->sha256, path,
                     sizeof(path));
    att->blobfd = open(path, O_RDONLY | O_CLOEXEC);
    if (att->blobfd < 0) {
        failf(run, "attachment %s: its stored bytes are missing (%s)",
              f->filename, strerror(errno));
        return;
    }
    att->offset = 0;
    buf_reserve(&f->b64, (size_t)(f->size + 2) / 3 * 4 + 3);
    buf_putc(&f->b64, '"');
    if (!att->slice)
        att->slice = evtimer_new(run_srv(run)->base, on_slice, run);
    struct timeval now = {0, 0};
    evtimer_add(att->slice, &now);
}

/* Which images go inline: each within ATTACH_IMAGE_MAX, in order while
 * their sum stays within ATTACH_IMAGES_TOTAL. */
static void choose_images(struct run_attach *att)
{
    int64_t total = 0;
    for (int i = 0; i < att->n; i++) {
        struct att_file *f = &att->files[i];
        f->image = is_image_type(f->content_type) &&
                   f->size <= ATTACH_IMAGE_MAX &&
                   total + f->size <= ATTACH_IMAGES_TOTAL;
        if (f->image)
            total += f->size;
    }
}

/* ---- copying into the workspace ---- */

/* The k-th candidate name for filename: itself, then "stem (k).ext",
 * cut (at a UTF-8 boundary) to fit a file name. */
static void candidate_name(const char *filename, int k, char *out)
{
    const char *base = filename;
    if (!*base || strchr(base, '/') || !strcmp(base, ".") ||
        !strcmp(base, ".."))
        base = "attachment";
    if (k == 1) {
        snprintf(out, WSPATH_NAME_MAX + 1, "%s", base);
        return;
    }
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        dot = base + strlen(base);
    char suffix[24];
    snprintf(suffix, sizeof(suffix), " (%d)", k);
    size_t ext = strlen(dot), room = WSPATH_NAME_MAX - strlen(suffix);
    if (ext > room / 2) { /* an odd "extension": part of the stem */
        dot = base + strlen(base);
        ext = 0;
    }
    size_t stem = (size_t)(dot - base);
    if (stem > room - ext)
        stem = room - ext;
    while (stem > 0 && ((unsigned char)base[stem] & 0xC0) == 0x80)
        stem--; /* not inside a UTF-8 sequence */
    snprintf(out, WSPATH_NAME_MAX + 1, "%.*s%s%.*s", (int)stem, base, suffix,
             (int)ext, dot);
}

/* Creates f's file in attachments/ under the first free name. */
static int reserve_name(struct run_attach *att, struct att_file *f)
{
    for (int k = 1; k <= ATTACH_NAME_TRIES; k++) {
        candidate_name(f->filename, k, f->name);
        int fd =
            openat(att->dirfd, f->name,
                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST)
            return fd < 0 ? -errno : fd;
    }
    return -EEXIST;
}

static void copy_next(struct run *run);

static void on_copied(void *arg, const struct child_result *res)
{
    int status = res->status;
    struct run *run = arg;
    struct run_attach *att = run->att;
    struct att_file *f = &att->files[att->next];
    if (!run_is_current(run)) {
        finish(run, NULL);
        return;
    }
    struct stat st;
    bool whole = fstat(att->destfd, &st) == 0 && st.st_size == f->size;
    close_fd(&att->destfd);
    if (status != 0 || !whole) {
        unlinkat(att->dirfd, f->name, 0);
        char why[64];
        snprintf(why, sizeof(why), "cat %s %d", status < 0 ? "lost," : "exit",
                 status < 0 ? status : status >> 8);
        failf(run,
              "attachment %s: copying it into the workspace failed "
              "(%s)",
              f->filename, whole ? why : "short copy");
        return;
    }
    att->next++;
    copy_next(run);
}

static void copy_next(struct run *run)
{
    struct run_attach *att = run->att;
    if (att->next == att->n) {
        close_fd(&att->dirfd);
        att->next = 0;
        choose_images(att);
        encode_next(run);
        return;
    }
    struct att_file *f = &att->files[att->next];
    char path[600];
    attach_blob_path(run_srv(run)->cfg->data_dir, f->sha256, path,
                     sizeof(path));
    int blob = open(path, O_RDONLY | O_CLOEXEC);
    if (blob < 0) {
        failf(run, "attachment %s: its stored bytes are missing (%s)",
              f->filename, strerror(errno));
        return;
    }
    att->destfd = reserve_name(att, f);
    if (att->destfd < 0) {
        close(blob);
        failf(run, "attachment %s: cannot create it in attachments/ (%s)",
              f->filename, strerror(-att->destfd));
        return;
    }
    static const char *const argv[] = {"/usr/bin/cat", "/proc/self/fd/3", NULL};
    struct child_spec spec = {argv, att->destfd, blob, 0, false,
                              run_srv(run)->cfg->child_nice};
    struct child *cat = child_start(run_srv(run)->base, &spec, on_copied, run);
    close(blob);
    if (!cat) {
        unlinkat(att->dirfd, f->name, 0);
        failf(run, "attachment %s: %s", f->filename, "cannot start the copy");
    }
}

/* Opens (making it when missing) attachments/ beneath the workspace. */
static int open_dir(struct run *run)
{
    const char *root = sandbox_workspace_dir(run->chat->sb);
    int rootfd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        return -errno;
    int fd = wspath_open(rootfd, ATTACH_DIR, O_RDONLY | O_DIRECTORY);
    if (fd == -ENOENT) {
        int dirfd = wspath_open(rootfd, "", O_RDONLY | O_DIRECTORY);
        if (dirfd >= 0 && mkdirat(dirfd, ATTACH_DIR, 0755) < 0 &&
            errno != EEXIST)
            fd = -errno;
        else if (dirfd >= 0)
            fd = wspath_open(rootfd, ATTACH_DIR, O_RDONLY | O_DIRECTORY);
        if (dirfd >= 0)
            close(dirfd);
    }
    close(rootfd);
    return fd;
}

void attach_prepare(struct run *run, void (*done)(struct run *run))
{
    struct run_attach *att = run->att;
    att->done = done;
    att->next = 0;
    run->refs++; /* released by finish */
    att->dirfd = open_dir(run);
    if (att->dirfd < 0) {
        failf(run, "cannot open the workspace folder %s/: %s", ATTACH_DIR,
              att->dirfd == -ENOTDIR ? "it is not a folder"
                                     : strerror(-att->dirfd));
        return;
    }
    copy_next(run);
}

/* ---- the user message ---- */

static void write_listing(struct json_w *w, const struct run_attach *att)
{
    struct buf t;
    buf_init(&t);
    buf_puts(&t, "The user attached these files; they are in the "
                 "workspace:\n");
    for (int i = 0; i < att->n; i++) {
        const struct att_file *f = &att->files[i];
        buf_printf(&t,
                   "- " SANDBOX_WORKSPACE "/" ATTACH_DIR "/%s (%lld "
                   "bytes, %s%s)\n",
                   f->name, (long long)f->size, f->content_type,
                   f->image ? ", shown above" : "");
    }
    json_w_obj_begin(w);
    json_w_kstr(w, "type", "text");
    json_w_key(w, "text");
    json_w_strn(w, t.data, t.len);
    json_w_obj_end(w);
    buf_deinit(&t);
}

static void write_image(struct json_w *w, struct att_file *f)
{
    json_w_obj_begin(w);
    json_w_kstr(w, "type", "image");
    json_w_key(w, "source");
    json_w_obj_begin(w);
    json_w_kstr(w, "type", "base64");
    json_w_kstr(w, "media_type", f->content_type);
    json_w_key(w, "data");
    json_w_raw(w, f->b64.data, f->b64.len);
    buf_deinit(&f->b64);
    json_w_obj_end(w);
    json_w_obj_end(w);
}

int attach_send_user(struct run *run, struct cli_proc *cli)
{
    struct run_attach *att = run->att;
    struct buf blocks;
    struct json_w w;
    size_t images = 0;
    for (int i = 0; i < att->n; i++)
        images += att->files[i].b64.len;
    buf_init(&blocks);
    buf_reserve(&blocks, images + 4096 + strlen(run->content) * 2);
    json_w_init(&w, &blocks);
    json_w_arr_begin(&w);
    for (int i = 0; i < att->n; i++)
        if (att->files[i].image)
            write_image(&w, &att->files[i]);
    write_listing(&w, att);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "text");
    json_w_kstr(&w, "text", run->content);
    json_w_obj_end(&w);
    json_w_arr_end(&w);
    int rc = cli_proc_send_user_blocks(cli, blocks.data, blocks.len,
                                       run->spec.user_message_id);
    buf_deinit(&blocks);
    return rc;
}
