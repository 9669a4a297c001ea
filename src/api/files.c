/* The workspace files API (API.md "Files"): list, download, upload
 * (PUT), delete, mkdir and tar.gz archive of the chat's workspace,
 * <data_dir>/sandboxes/<chat_id>/workspace. Every path goes through
 * wspath (syntax check, then openat2 RESOLVE_BENEATH from an fd of the
 * root), so nothing outside the root is ever opened. The chat's owner is
 * checked first; another user's chat is 404 before any file is looked at.
 * Long work (archives, deleting a tree) runs in child processes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "corral/api.h"
#include "corral/base64.h"
#include "corral/child.h"
#include "corral/files.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/quota.h"
#include "corral/server.h"
#include "corral/store_runs.h"
#include "corral/upload.h"
#include "corral/wspath.h"

struct files_op {
    void (*action)(struct req *r, int rootfd);
    bool create_root;           /* PUT and mkdir make the workspace */
    bool check_quota;           /* PUT: 507 when the workspace is over */
    char chat_id[UUID_STR_LEN + 1];
    char path[WSPATH_MAX + 1];  /* normalised; "" = the root */
};

/* ---- paths ---- */

/* ?path= decoded with its length, so that %00 is seen. NULL if absent. */
static char *raw_path_param(struct req *r, size_t *len)
{
    const char *q = req_query_raw(r);
    while (q && *q) {
        size_t n = strcspn(q, "&");
        if (n >= 5 && strncmp(q, "path=", 5) == 0) {
            char *out = xmalloc(n);
            size_t o = 0;
            for (size_t i = 5; i < n; i++) {
                int hi, lo;
                if (q[i] == '%' && i + 2 < n &&
                    (hi = hex_digit(q[i + 1])) >= 0 &&
                    (lo = hex_digit(q[i + 2])) >= 0) {
                    out[o++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    out[o++] = q[i] == '+' ? ' ' : q[i];
                }
            }
            *len = o;
            return out;
        }
        q += n + (q[n] == '&');
    }
    return NULL;
}

static void bad_path(struct req *r, const char *why)
{
    req_problem(r, 422, "bad_path", "path: %s", why);
}

/* Answers the failure of a wspath call (-errno). */
static void path_error(struct req *r, int err)
{
    if (err == -EXDEV || err == -ELOOP)
        bad_path(r, "leaves the workspace (through a symlink)");
    else if (err == -ENOENT || err == -ENOTDIR)
        req_problem(r, 404, "not_found", "no such file or directory");
    else {
        log_error("files: %s", strerror(-err));
        req_problem(r, 500, "internal_error", "the workspace is not "
                    "accessible");
    }
}

static void root_dir(struct req *r, const char *chat_id, char *out,
                     size_t n)
{
    snprintf(out, n, "%s/sandboxes/%s/workspace", r->srv->cfg->data_dir,
             chat_id);
}

static int open_root(struct req *r, const struct files_op *op)
{
    char root[600];
    root_dir(r, op->chat_id, root, sizeof(root));
    int fd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT || !op->create_root)
        return fd < 0 ? -errno : fd;
    /* As the sandbox makes it (src/sandbox/local.c): 0700 each. */
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/sandboxes", r->srv->cfg->data_dir);
    mkdir(dir, 0700);
    snprintf(dir, sizeof(dir), "%s/sandboxes/%s", r->srv->cfg->data_dir,
             op->chat_id);
    mkdir(dir, 0700);
    mkdir(root, 0700);
    fd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void run_action(struct req *r)
{
    struct files_op *op = r->state;
    int rootfd = open_root(r, op);
    if (rootfd < 0 && rootfd != -ENOENT) {
        path_error(r, rootfd);
        return;
    }
    op->action(r, rootfd); /* -ENOENT: no workspace yet */
    if (rootfd >= 0)
        close(rootfd);
}

/* DESIGN.md §6: the workspace is measured before each upload. */
static void on_quota_measured(void *arg, bool over, int64_t used_bytes)
{
    struct req *r = arg;
    if (over)
        req_problem(r, 507, "quota_exceeded", "the chat's workspace is over "
                    "its quota (%lld bytes used)", (long long)used_bytes);
    else
        run_action(r);
}

static void on_chat_owned(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct files_op *op = r->state;
    if (!req_store_row(r, reply, "chat"))
        return;
    snprintf(op->chat_id, sizeof(op->chat_id), "%s",
             pg_val(reply->res, 0, 0));
    if (op->check_quota)
        workspace_quota_check(r->srv, op->chat_id, on_quota_measured, r);
    else
        run_action(r);
}

/* Checks the chat id and ?path=, then the owner, then runs action. */
enum {
    FILES_NEED_PATH = 1 << 0,   /* ?path= must name something */
    FILES_CREATE_ROOT = 1 << 1, /* PUT and mkdir make the workspace */
    FILES_CHECK_QUOTA = 1 << 2, /* PUT: measure the workspace first */
};

static void files_begin(struct req *r, void (*action)(struct req *, int),
                        unsigned flags)
{
    bool need_path = flags & FILES_NEED_PATH;
    if (!ids_is_uuid(req_param(r, "id"))) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    struct files_op *op = xcalloc(1, sizeof(*op));
    op->action = action;
    op->create_root = flags & FILES_CREATE_ROOT;
    op->check_quota = flags & FILES_CHECK_QUOTA;
    r->state = op;
    size_t len = 0;
    char *raw = raw_path_param(r, &len);
    if (!raw && need_path) {
        bad_path(r, "required");
        return;
    }
    const char *why = raw ? wspath_check(raw, len, op->path) : NULL;
    free(raw);
    if (why) {
        bad_path(r, why);
        return;
    }
    if (need_path && !op->path[0]) {
        bad_path(r, "must name something beneath the workspace root");
        return;
    }
    store_chat_owned(r->srv->pg, req_param(r, "id"), r->auth.user_id,
                     on_chat_owned, r);
}

/* ---- list ---- */

struct entry {
    char *name;
    const char *type;
    long long size;
    struct timespec mtime;
};

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name,
                  ((const struct entry *)b)->name);
}

static void write_time(struct json_w *w, const char *key,
                       const struct timespec *ts)
{
    char when[40];
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03dZ",
             (int)(ts->tv_nsec / 1000000));
    json_w_kstr(w, key, when);
}

static void write_entries(struct req *r, struct entry *e, size_t n,
                          int limit, const char *after)
{
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_key(&w, "items");
    json_w_arr_begin(&w);
    int shown = 0;
    const char *last = NULL;
    size_t i = 0;
    for (; i < n && shown < limit; i++) {
        if (after && strcmp(e[i].name, after) <= 0)
            continue;
        json_w_obj_begin(&w);
        json_w_kstr(&w, "name", e[i].name);
        json_w_kstr(&w, "type", e[i].type);
        json_w_kint(&w, "size", e[i].size);
        write_time(&w, "mtime", &e[i].mtime);
        json_w_obj_end(&w);
        last = e[i].name;
        shown++;
    }
    json_w_arr_end(&w);
    json_w_next_cursor(&w, i < n && shown == limit ? last : NULL);
    json_w_obj_end(&w);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

static size_t read_entries(DIR *d, struct entry **out)
{
    size_t n = 0, cap = 0;
    struct entry *e = NULL;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            e = xrealloc(e, cap * sizeof(*e));
        }
        e[n].name = xstrdup(de->d_name);
        e[n].type = S_ISDIR(st.st_mode) ? "dir"
                    : S_ISLNK(st.st_mode) ? "symlink" : "file";
        e[n].size = (long long)st.st_size;
        e[n].mtime = st.st_mtim;
        n++;
    }
    qsort(e, n, sizeof(*e), entry_cmp);
    *out = e;
    return n;
}

static void do_list(struct req *r, int rootfd)
{
    struct files_op *op = r->state;
    int limit;
    const char *cursor;
    if (!req_page(r, &limit, &cursor))
        return;
    if (rootfd < 0) { /* no workspace yet: an empty root */
        if (op->path[0])
            path_error(r, -ENOENT);
        else
            write_entries(r, NULL, 0, limit, NULL);
        return;
    }
    int fd = wspath_open(rootfd, op->path, O_RDONLY | O_DIRECTORY);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        path_error(r, fd < 0 ? fd : -errno);
        return;
    }
    struct entry *e = NULL;
    size_t n = read_entries(d, &e);
    closedir(d);
    write_entries(r, e, n, limit, cursor);
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

void api_files_list(struct req *r)
{
    files_begin(r, do_list, 0);
}

/* ---- download ---- */

static void do_get(struct req *r, int rootfd)
{
    struct files_op *op = r->state;
    int fd = rootfd < 0 ? -ENOENT : wspath_open(rootfd, op->path, O_RDONLY);
    struct stat st;
    if (fd < 0) {
        path_error(r, fd);
        return;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        bad_path(r, "is not a regular file");
        return;
    }
    const char *base = strrchr(op->path, '/');
    stream_out_disposition(r, base ? base + 1 : op->path);
    req_add_header(r, "X-Content-Type-Options", "nosniff");
    stream_out_file(r, fd, (uint64_t)st.st_size, "application/octet-stream");
}

void api_files_content_get(struct req *r)
{
    files_begin(r, do_get, FILES_NEED_PATH);
}

/* ---- upload, mkdir ---- */

/* Opens (creating as needed) the parent directories of op->path, one
 * component at a time beneath the root. The parent's fd or -errno;
 * name gets the last component. */
static int make_parents(int rootfd, const char *path, char *name)
{
    char part[WSPATH_MAX + 1];
    for (const char *s = strchr(path, '/'); s; s = strchr(s + 1, '/')) {
        size_t n = (size_t)(s - path);
        memcpy(part, path, n);
        part[n] = '\0';
        int dfd = wspath_open_parent(rootfd, part, name);
        if (dfd < 0)
            return dfd;
        int rc = mkdirat(dfd, name, 0755);
        close(dfd);
        if (rc < 0 && errno != EEXIST)
            return -errno;
    }
    return wspath_open_parent(rootfd, path, name);
}

static void do_put(struct req *r, int rootfd)
{
    struct files_op *op = r->state;
    struct upload *u = r->upload;
    char name[WSPATH_NAME_MAX + 1];
    if (!u) {
        req_problem(r, 500, "internal_error", "no room for the upload");
        return;
    }
    if (u->status) {
        req_problem(r, u->status, u->code, "%s", u->detail);
        return;
    }
    int pfd = make_parents(rootfd, op->path, name);
    if (pfd < 0) {
        path_error(r, pfd);
        return;
    }
    struct stat st;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISDIR(st.st_mode)) {
        close(pfd);
        req_problem(r, 409, "is_a_directory", "path: is a directory");
        return;
    }
    int rc = renameat(AT_FDCWD, u->path, pfd, name);
    int err = errno;
    close(pfd);
    if (rc < 0) {
        log_error("files: rename into the workspace: %s", strerror(err));
        req_problem(r, 500, "internal_error", "the file was not stored");
        return;
    }
    upload_release_path(u);
    req_reply_empty(r, 204);
}

void api_files_content_put(struct req *r)
{
    files_begin(r, do_put, FILES_NEED_PATH | FILES_CREATE_ROOT |
                              FILES_CHECK_QUOTA);
}

static void do_mkdir(struct req *r, int rootfd)
{
    struct files_op *op = r->state;
    char name[WSPATH_NAME_MAX + 1];
    int pfd = make_parents(rootfd, op->path, name);
    if (pfd < 0) {
        path_error(r, pfd);
        return;
    }
    int rc = mkdirat(pfd, name, 0755);
    int err = errno;
    close(pfd);
    if (rc < 0 && err == EEXIST) {
        req_problem(r, 409, "exists", "path: already exists");
        return;
    }
    if (rc < 0) {
        path_error(r, -err);
        return;
    }
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "path", op->path);
    json_w_obj_end(&w);
    req_reply_json(r, 201, &body);
    buf_deinit(&body);
}

void api_files_mkdir(struct req *r)
{
    files_begin(r, do_mkdir, FILES_NEED_PATH | FILES_CREATE_ROOT);
}

/* ---- delete ---- */

static void on_rm_exit(void *arg, const struct child_result *res)
{
    if (res->status != 0)
        log_warn("files: removing a deleted tree failed (status %d): %s",
                 res->status, res->out);
}

/* A directory is renamed out of the workspace at once (the answer is
 * true as soon as it is sent) and removed by a child; start-up removes
 * what a stopped process left (sandbox_local_sweep: .trash-*). */
static int remove_tree(struct req *r, int pfd, const char *name)
{
    char trash[700], uid[UUID_STR_LEN + 1];
    if (ids_uuid7(uid) < 0)
        return -EAGAIN;
    snprintf(trash, sizeof(trash), "%s/sandboxes/.trash-files-%s",
             r->srv->cfg->data_dir, uid);
    if (renameat(pfd, name, AT_FDCWD, trash) < 0)
        return -errno;
    const char *argv[] = {"/bin/rm", "-rf", "--one-file-system", "--",
                          trash, NULL};
    struct child_spec spec = {argv, -1, -1, 0, false,
                              r->srv->cfg->child_nice};
    if (!child_start(r->srv->base, &spec, on_rm_exit, NULL))
        log_error("files: cannot start rm: %s (start-up removes %s)",
                  strerror(errno), trash);
    return 0;
}

static void do_delete(struct req *r, int rootfd)
{
    struct files_op *op = r->state;
    char name[WSPATH_NAME_MAX + 1];
    int pfd = rootfd < 0 ? -ENOENT
                         : wspath_open_parent(rootfd, op->path, name);
    struct stat st;
    if (pfd >= 0 && fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        close(pfd);
        pfd = -errno;
    }
    if (pfd < 0) {
        path_error(r, pfd);
        return;
    }
    int rc = S_ISDIR(st.st_mode) ? remove_tree(r, pfd, name)
                                 : (unlinkat(pfd, name, 0) < 0 ? -errno : 0);
    close(pfd);
    if (rc < 0) {
        path_error(r, rc);
        return;
    }
    req_reply_empty(r, 204);
}

void api_files_delete(struct req *r)
{
    files_begin(r, do_delete, FILES_NEED_PATH);
}

/* ---- archive ---- */

struct archive_job {
    struct stream_out *s;
};

static void on_tar_exit(void *arg, const struct child_result *res)
{
    struct archive_job *job = arg;
    if (res->status != 0)
        log_warn("files: tar ended with status %d", res->status);
    stream_out_child_done(job->s, res->status);
    free(job);
}

static void do_archive(struct req *r, int rootfd)
{
    struct files_op *op = r->state;
    int dfd = rootfd < 0 ? -ENOENT
                         : wspath_open(rootfd, op->path,
                                       O_RDONLY | O_DIRECTORY);
    if (dfd < 0) {
        path_error(r, dfd);
        return;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        close(dfd);
        req_problem(r, 500, "internal_error", "no pipe for the archive");
        return;
    }
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    /* tar reads the directory through the fd opened beneath the root:
     * the path is never resolved again. Symlinks are stored as links. */
    const char *argv[] = {"/usr/bin/tar", "-C", "/proc/self/fd/3",
                          "--one-file-system", "-czf", "-", ".", NULL};
    struct archive_job *job = xcalloc(1, sizeof(*job));
    struct child_spec spec = {argv, p[1], dfd, 0, false,
                              r->srv->cfg->child_nice};
    struct child *tar = child_start(r->srv->base, &spec, on_tar_exit, job);
    close(p[1]);
    close(dfd);
    if (!tar) {
        close(p[0]);
        free(job);
        req_problem(r, 500, "internal_error", "cannot start tar");
        return;
    }
    req_add_header(r, "Content-Disposition",
                   "attachment; filename=\"workspace.tar.gz\"");
    job->s = stream_out_pipe(r, p[0], "application/gzip");
}

void api_files_archive(struct req *r)
{
    files_begin(r, do_archive, 0);
}
