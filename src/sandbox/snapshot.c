/* corral-snapshot: the checkpoint store of one chat, run by corrald as a
 * child process so that hashing and copying never block its loop
 * (DESIGN.md §5 CHECKPOINT, docs/notes.md "Checkpoints and restore").
 *
 *   corral-snapshot snapshot <store> <id> <workspace> <session_dir>
 *   corral-snapshot restore  <store> <id> <workspace> <session_dir>
 *   corral-snapshot gc       <store> [<id to keep> ...]
 *   corral-snapshot drop     <store>
 *
 * The store holds blobs/<ab>/<sha256> (file contents, shared by all the
 * chat's checkpoints), manifests/<id> (include/corral/manifest.h) and
 * `last` (the id taken or restored last: its manifest lets an unchanged
 * file, same size, mtime and inode, reuse its hash without being read).
 * On success the last line on stdout is JSON {files, bytes_stored,
 * bytes_total} and the exit status 0; otherwise a message on stderr and
 * status 1. Trees are walked with *at() calls and O_NOFOLLOW: a symlink
 * in the workspace is recorded and restored, never followed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/md.h>

#include "corral/manifest.h"

#define COPY_CHUNK 65536

/* Names in the session tree that are caches, not session state. */
static const char *const skip_home[] = {
    "cache", "statsig", "debug", "shell-snapshots", "telemetry", NULL,
};

struct entries {
    struct mf_entry *v;
    size_t n, cap;
};

struct totals {
    int64_t files, bytes_stored, bytes_total;
};

struct snap {
    const char *store;
    struct entries prev;  /* sorted, for reuse */
    FILE *out;
    struct totals t;
};

__attribute__((noreturn, format(printf, 1, 2))) static void die(
    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("corral-snapshot: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

static void mkdir_p(const char *path)
{
    char *p = strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            die("mkdir %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        die("mkdir %s: %s", p, strerror(errno));
    free(p);
}

static void push(struct entries *es, const struct mf_entry *e)
{
    if (es->n == es->cap) {
        es->cap = es->cap ? 2 * es->cap : 256;
        es->v = realloc(es->v, es->cap * sizeof(*es->v));
        if (!es->v)
            abort();
    }
    es->v[es->n++] = *e;
}

static void entries_free(struct entries *es)
{
    for (size_t i = 0; i < es->n; i++)
        mf_entry_free(&es->v[i]);
    free(es->v);
    memset(es, 0, sizeof(*es));
}

/* Reads a manifest; false when it does not exist. Dies when malformed. */
static bool load_manifest(const char *path, struct entries *es)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return false;
        die("%s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool header = false;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        if (!header) {
            if (strcmp(line, MANIFEST_HEADER) != 0)
                die("%s: not a manifest", path);
            header = true;
            continue;
        }
        struct mf_entry e;
        if (!mf_parse(line, &e))
            die("%s: malformed line", path);
        push(es, &e);
    }
    free(line);
    fclose(f);
    if (!header)
        die("%s: empty manifest", path);
    return true;
}

static char *read_last(const char *store)
{
    char *path = fmt("%s/last", store), buf[64] = "";
    FILE *f = fopen(path, "re");
    free(path);
    if (!f)
        return NULL;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return buf[0] && !strchr(buf, '/') ? strdup(buf) : NULL;
}

static void write_last(const char *store, const char *id)
{
    char *tmp = fmt("%s/last.tmp", store), *path = fmt("%s/last", store);
    FILE *f = fopen(tmp, "we");
    if (!f || fprintf(f, "%s\n", id) < 0 || fclose(f) != 0)
        die("%s: %s", tmp, strerror(errno));
    if (rename(tmp, path) < 0)
        die("rename %s: %s", tmp, strerror(errno));
    free(tmp);
    free(path);
}

static bool blob_exists(const char *store, const char *sha)
{
    char *path = fmt("%s/blobs/%.2s/%s", store, sha, sha);
    bool ok = access(path, F_OK) == 0;
    free(path);
    return ok;
}

static void hex(const unsigned char *d, char *out)
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* Copies fd into a new blob while hashing it; adds the bytes to
 * bytes_stored only when the blob was not in the store yet. */
static void store_blob(struct snap *s, int fd, struct mf_entry *e)
{
    char *tmp = fmt("%s/tmp/blob-XXXXXX", s->store);
    int out = mkostemp(tmp, O_CLOEXEC);
    if (out < 0)
        die("mkstemp: %s", strerror(errno));
    mbedtls_md_context_t md;
    mbedtls_md_init(&md);
    if (mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                         0) != 0 || mbedtls_md_starts(&md) != 0)
        die("sha256 setup failed");
    static char buf[COPY_CHUNK];
    ssize_t n;
    int64_t size = 0;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        mbedtls_md_update(&md, (unsigned char *)buf, (size_t)n);
        if (write(out, buf, (size_t)n) != n)
            die("writing a blob: %s", strerror(errno));
        size += n;
    }
    if (n < 0)
        die("reading %s: %s", e->path, strerror(errno));
    unsigned char d[32];
    mbedtls_md_finish(&md, d);
    mbedtls_md_free(&md);
    close(out);
    hex(d, e->sha);
    e->size = size; /* what was read, if the file changed meanwhile */
    char *dir = fmt("%s/blobs/%.2s", s->store, e->sha);
    char *path = fmt("%s/%s", dir, e->sha);
    mkdir_p(dir);
    if (access(path, F_OK) == 0) {
        unlink(tmp);
    } else {
        if (rename(tmp, path) < 0)
            die("rename %s: %s", tmp, strerror(errno));
        s->t.bytes_stored += size;
    }
    free(tmp);
    free(dir);
    free(path);
}

static const struct mf_entry *find(const struct entries *es, char root,
                                   const char *path)
{
    struct mf_entry key = {.root = root, .path = (char *)path};
    return es->n ? bsearch(&key, es->v, es->n, sizeof(*es->v), mf_cmp)
                 : NULL;
}

static void snap_file(struct snap *s, int dirfd, const char *name,
                      struct mf_entry *e)
{
    const struct mf_entry *p = find(&s->prev, e->root, e->path);
    if (p && p->kind == 'f' && p->size == e->size &&
        p->mtime_ns == e->mtime_ns && p->ino == e->ino &&
        blob_exists(s->store, p->sha)) {
        memcpy(e->sha, p->sha, sizeof(e->sha));
        return;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        die("open %s: %s", e->path, strerror(errno));
    store_blob(s, fd, e);
    close(fd);
}

static void emit(struct snap *s, const struct mf_entry *e)
{
    char *line = mf_format(e);
    if (fprintf(s->out, "%s\n", line) < 0)
        die("writing the manifest: %s", strerror(errno));
    free(line);
}

static bool skipped(char root, const char *rel, const char *name)
{
    if (root != 'h' || rel[0])
        return false;
    for (int i = 0; skip_home[i]; i++)
        if (strcmp(name, skip_home[i]) == 0)
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One directory (open as dirfd, at rel beneath the root), pre-order. */
static void snap_dir(struct snap *s, char root, int dirfd, const char *rel)
{
    int dup_fd = dup(dirfd);
    DIR *d = fdopendir(dup_fd);
    if (!d)
        die("opendir %s: %s", rel, strerror(errno));
    struct dirent *de;
    char **list = NULL;
    size_t n = 0;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        list = realloc(list, (n + 1) * sizeof(*list));
        list[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n)
        qsort(list, n, sizeof(*list), cmp_str);
    for (size_t i = 0; i < n; i++) {
        const char *name = list[i];
        struct stat st;
        if (skipped(root, rel, name) ||
            fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* gone meanwhile */
        struct mf_entry e = {.root = root, .mode = st.st_mode & 07777,
                             .mtime_ns = (int64_t)st.st_mtim.tv_sec *
                                             1000000000 + st.st_mtim.tv_nsec,
                             .ino = (uint64_t)st.st_ino};
        e.path = rel[0] ? fmt("%s/%s", rel, name) : strdup(name);
        if (S_ISREG(st.st_mode)) {
            e.kind = 'f';
            e.size = st.st_size;
            snap_file(s, dirfd, name, &e);
            s->t.files++;
            s->t.bytes_total += e.size;
            emit(s, &e);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t k = readlinkat(dirfd, name, target, sizeof(target) - 1);
            if (k > 0) {
                target[k] = '\0';
                e.kind = 'l';
                e.target = strdup(target);
                emit(s, &e);
            }
        } else if (S_ISDIR(st.st_mode)) {
            e.kind = 'd';
            emit(s, &e);
            int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY |
                                              O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                die("open %s: %s", e.path, strerror(errno));
            snap_dir(s, root, sub, e.path);
            close(sub);
        } /* sockets, fifos, devices: not content */
        mf_entry_free(&e);
    }
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static void snap_root(struct snap *s, char root, const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return; /* no session yet */
        die("open %s: %s", dir, strerror(errno));
    }
    snap_dir(s, root, fd, "");
    close(fd);
}

static void print_totals(const struct totals *t)
{
    printf("{\"files\":%" PRId64 ",\"bytes_stored\":%" PRId64
           ",\"bytes_total\":%" PRId64 "}\n",
           t->files, t->bytes_stored, t->bytes_total);
}

static bool id_ok(const char *id)
{
    return id[0] && strlen(id) <= 64 && !strchr(id, '/') && id[0] != '.';
}

static int cmd_snapshot(char **argv)
{
    struct snap s = {.store = argv[0]};
    const char *id = argv[1];
    if (!id_ok(id))
        die("bad id");
    char *dirs[] = {fmt("%s/blobs", s.store), fmt("%s/manifests", s.store),
                    fmt("%s/tmp", s.store)};
    for (int i = 0; i < 3; i++) {
        mkdir_p(dirs[i]);
        free(dirs[i]);
    }
    char *last = read_last(s.store);
    if (last) {
        char *p = fmt("%s/manifests/%s", s.store, last);
        load_manifest(p, &s.prev);
        qsort(s.prev.v, s.prev.n, sizeof(*s.prev.v), mf_cmp);
        free(p);
        free(last);
    }
    char *tmp = fmt("%s/manifests/.%s.tmp", s.store, id);
    char *path = fmt("%s/manifests/%s", s.store, id);
    s.out = fopen(tmp, "we");
    if (!s.out)
        die("%s: %s", tmp, strerror(errno));
    fprintf(s.out, "%s\n", MANIFEST_HEADER);
    snap_root(&s, 'w', argv[2]);
    snap_root(&s, 'h', argv[3]);
    if (fflush(s.out) != 0 || fsync(fileno(s.out)) < 0 || fclose(s.out))
        die("writing the manifest: %s", strerror(errno));
    if (rename(tmp, path) < 0)
        die("rename %s: %s", tmp, strerror(errno));
    write_last(s.store, id);
    entries_free(&s.prev);
    free(tmp);
    free(path);
    print_totals(&s.t);
    return 0;
}

/* ---- restore ---- */

/* Removes name (beneath dirfd) and everything in it. */
static void remove_tree(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            die("unlink %s: %s", name, strerror(errno));
        return;
    }
    fchmodat(dirfd, name, 0700, 0); /* a dir left without permissions */
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                     O_CLOEXEC);
    if (fd >= 0) {
        DIR *d = fdopendir(dup(fd));
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL)
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                remove_tree(fd, de->d_name);
        if (d)
            closedir(d);
        close(fd);
    }
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        die("rmdir %s: %s", name, strerror(errno));
}

static char kind_of(mode_t m)
{
    return S_ISREG(m) ? 'f' : S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'l' : '?';
}

/* Removes what the checkpoint does not have (or has as another kind). */
static void prune(const struct entries *want, char root, int dirfd,
                  const char *rel)
{
    DIR *d = fdopendir(dup(dirfd));
    if (!d)
        die("opendir %s: %s", rel, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        struct stat st;
        if (!strcmp(name, ".") || !strcmp(name, "..") ||
            skipped(root, rel, name) ||
            fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        char *path = rel[0] ? fmt("%s/%s", rel, name) : strdup(name);
        const struct mf_entry *e = find(want, root, path);
        if (!e || e->kind != kind_of(st.st_mode)) {
            remove_tree(dirfd, name);
        } else if (e->kind == 'd') {
            fchmodat(dirfd, name, 0700, 0);
            int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY |
                                              O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                die("open %s: %s", path, strerror(errno));
            prune(want, root, sub, path);
            close(sub);
        }
        free(path);
    }
    closedir(d);
}

/* The directory holding e (opened beneath rootfd, component by
 * component, never through a symlink); *name gets the last component. */
static int open_parent(int rootfd, const char *path, const char **name)
{
    int fd = dup(rootfd);
    const char *p = path, *slash;
    while ((slash = strchr(p, '/')) != NULL) {
        char *comp = strndup(p, (size_t)(slash - p));
        int sub = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                       O_CLOEXEC);
        if (sub < 0)
            die("open %s: %s", path, strerror(errno));
        free(comp);
        close(fd);
        fd = sub;
        p = slash + 1;
    }
    *name = p;
    return fd;
}

static void set_mtime(int fd, int64_t ns)
{
    struct timespec ts[2] = {{0, UTIME_OMIT},
                             {(time_t)(ns / 1000000000), (long)(ns % 1000000000)}};
    futimens(fd, ts);
}

static void restore_file(const char *store, int dirfd, const char *name,
                         const struct mf_entry *e)
{
    char *blob = fmt("%s/blobs/%.2s/%s", store, e->sha, e->sha);
    int in = open(blob, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        die("blob of %s: %s", e->path, strerror(errno));
    char tmp[64];
    snprintf(tmp, sizeof(tmp), ".corral-restore-%d", (int)getpid());
    unlinkat(dirfd, tmp, 0);
    int out = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                                     O_CLOEXEC, 0600);
    if (out < 0)
        die("create %s: %s", e->path, strerror(errno));
    static char buf[COPY_CHUNK];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            die("write %s: %s", e->path, strerror(errno));
    if (n < 0)
        die("read blob: %s", strerror(errno));
    fchmod(out, e->mode);
    set_mtime(out, e->mtime_ns);
    close(out);
    close(in);
    if (renameat(dirfd, tmp, dirfd, name) < 0)
        die("rename %s: %s", e->path, strerror(errno));
    free(blob);
}

static void apply(const char *store, int rootfd, const struct mf_entry *e)
{
    const char *name;
    int dirfd = open_parent(rootfd, e->path, &name);
    if (e->kind == 'd') {
        if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
            die("mkdir %s: %s", e->path, strerror(errno));
        fchmodat(dirfd, name, 0700, 0); /* its mode comes at the end */
    } else if (e->kind == 'l') {
        unlinkat(dirfd, name, 0);
        if (symlinkat(e->target, dirfd, name) < 0)
            die("symlink %s: %s", e->path, strerror(errno));
    } else {
        restore_file(store, dirfd, name, e);
    }
    close(dirfd);
}

/* Directory modes and times last, deepest first: writing into a
 * directory changes its mtime, and a read-only one refuses entries. */
static void finish_dirs(int rootfd, const struct entries *es, char root)
{
    for (size_t i = es->n; i-- > 0;) {
        const struct mf_entry *e = &es->v[i];
        if (e->root != root || e->kind != 'd')
            continue;
        const char *name;
        int dirfd = open_parent(rootfd, e->path, &name);
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                         O_CLOEXEC);
        if (fd >= 0) {
            fchmod(fd, e->mode);
            set_mtime(fd, e->mtime_ns);
            close(fd);
        }
        close(dirfd);
    }
}

static void restore_root(const char *store, const struct entries *es,
                         const struct entries *sorted, char root,
                         const char *dir, struct totals *t)
{
    mkdir_p(dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        die("open %s: %s", dir, strerror(errno));
    prune(sorted, root, fd, "");
    for (size_t i = 0; i < es->n; i++) {
        const struct mf_entry *e = &es->v[i];
        if (e->root != root)
            continue;
        apply(store, fd, e);
        if (e->kind == 'f') {
            t->files++;
            t->bytes_total += e->size;
        }
    }
    finish_dirs(fd, es, root);
    close(fd);
}

static int cmd_restore(char **argv)
{
    const char *store = argv[0], *id = argv[1];
    if (!id_ok(id))
        die("bad id");
    struct entries es = {0}, sorted = {0};
    char *path = fmt("%s/manifests/%s", store, id);
    if (!load_manifest(path, &es))
        die("no manifest for checkpoint %s", id);
    load_manifest(path, &sorted);
    qsort(sorted.v, sorted.n, sizeof(*sorted.v), mf_cmp);
    struct totals t = {0};
    restore_root(store, &es, &sorted, 'w', argv[2], &t);
    restore_root(store, &es, &sorted, 'h', argv[3], &t);
    write_last(store, id);
    entries_free(&es);
    entries_free(&sorted);
    free(path);
    print_totals(&t);
    return 0;
}

/* ---- gc ---- */

static bool kept(char **keep, int nkeep, const char *id)
{
    for (int i = 0; i < nkeep; i++)
        if (strcmp(keep[i], id) == 0)
            return true;
    return false;
}

/* Deletes the manifests not kept, then every blob no kept manifest
 * names. Prints the blobs kept as files and minus the bytes freed as
 * bytes_stored. */
static int cmd_gc(char **keep, int nkeep, const char *store)
{
    char *mdir = fmt("%s/manifests", store);
    DIR *d = opendir(mdir);
    struct dirent *de;
    char **shas = NULL;
    size_t nshas = 0;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *p = fmt("%s/%s", mdir, de->d_name);
        if (!kept(keep, nkeep, de->d_name)) {
            unlink(p);
        } else {
            struct entries es = {0};
            load_manifest(p, &es);
            for (size_t i = 0; i < es.n; i++)
                if (es.v[i].kind == 'f') {
                    shas = realloc(shas, (nshas + 1) * sizeof(*shas));
                    shas[nshas++] = strdup(es.v[i].sha);
                }
            entries_free(&es);
        }
        free(p);
    }
    if (d)
        closedir(d);
    if (nshas)
        qsort(shas, nshas, sizeof(*shas), cmp_str);
    char *bdir = fmt("%s/blobs", store);
    DIR *b = opendir(bdir);
    struct totals t = {0};
    while (b && (de = readdir(b)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *sub = fmt("%s/%s", bdir, de->d_name);
        DIR *s = opendir(sub);
        struct dirent *f;
        while (s && (f = readdir(s)) != NULL) {
            const char *name = f->d_name;
            if (name[0] == '.')
                continue;
            if (nshas &&
                bsearch(&name, shas, nshas, sizeof(*shas), cmp_str)) {
                t.files++;
                continue;
            }
            char *p = fmt("%s/%s", sub, name);
            struct stat st;
            if (stat(p, &st) == 0)
                t.bytes_stored -= st.st_size;
            unlink(p);
            free(p);
        }
        if (s)
            closedir(s);
        rmdir(sub); /* only when it became empty */
        free(sub);
    }
    if (b)
        closedir(b);
    for (size_t i = 0; i < nshas; i++)
        free(shas[i]);
    free(shas);
    free(bdir);
    free(mdir);
    print_totals(&t);
    return 0;
}

static void drop(const char *dir)
{
    char *parent = strdup(dir);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent)
        die("drop: not a path beneath a directory");
    *slash = '\0';
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        remove_tree(fd, slash + 1);
        close(fd);
    }
    free(parent);
    struct totals t = {0};
    print_totals(&t);
}

int main(int argc, char **argv)
{
    umask(077);
    if (argc == 6 && strcmp(argv[1], "snapshot") == 0)
        return cmd_snapshot(argv + 2);
    if (argc == 6 && strcmp(argv[1], "restore") == 0)
        return cmd_restore(argv + 2);
    if (argc >= 3 && argc < 1000 && strcmp(argv[1], "gc") == 0)
        return cmd_gc(argv + 3, argc - 3, argv[2]);
    if (argc == 3 && strcmp(argv[1], "drop") == 0) {
        drop(argv[2]);
        return 0;
    }
    fprintf(stderr, "usage: corral-snapshot snapshot|restore STORE ID "
                    "WORKSPACE SESSION_DIR | gc STORE [KEEP_ID...] | "
                    "drop STORE\n");
    return 2;
}
