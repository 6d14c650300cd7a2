/* a shard's bytes from a local file or a command's standard output; see
 * shard_stream.h. */
#include "shard_stream.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data_file.h"

extern char **environ;

#define TAIL_BYTES 2048                /* standard error kept for the message */
#define DRAIN_LIMIT ((size_t)16 << 20) /* output read and dropped after the archive's end */

struct tc_shard_stream {
    char shown[600]; /* the redacted name */
    int fd;          /* local file, or the command's standard output */
    int err_fd;      /* the command's standard error, -1 when closed */
    pid_t pid;       /* 0 for a local file; also the process group */
    int reaped, status;
    int failed; /* a read failed: close does not check the status again */
    tc_stream_opts o;
    char tail[TAIL_BYTES];
    size_t tail_n; /* bytes in tail (the last ones written) */
};

void tc_stream_opts_init(tc_stream_opts *o) {
    memset(o, 0, sizeof *o);
    o->retries = 3;
    o->backoff_ms = 1000;
    o->timeout_s = 300;
}

static int starts_with(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

static int is_http(const char *name) {
    return starts_with(name, "http://") || starts_with(name, "https://");
}

int tc_shard_is_remote(const char *name) {
    return starts_with(name, "pipe:") || is_http(name);
}

/* ---- redaction ---- */

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* one whitespace-free word of a command, redacted, appended at out[*at] */
static void redact_word(const char *w, size_t n, char *out, size_t cap, size_t *at) {
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (*at + 1 < cap) out[(*at)++] = (c);                                                     \
    } while (0)
    size_t i = 0;
    /* NAME=value: an environment assignment in front of a command */
    if (n > 0 && (isalpha((unsigned char)w[0]) || w[0] == '_')) {
        size_t k = 1;
        while (k < n && (isalnum((unsigned char)w[k]) || w[k] == '_'))
            k++;
        if (k < n && w[k] == '=' && !memchr(w, '/', k)) {
            for (size_t j = 0; j <= k; j++)
                PUT(w[j]);
            for (const char *r = "***"; *r; r++)
                PUT(*r);
            return;
        }
    }
    /* the closing quotes of a quoted word are kept */
    size_t end = n;
    while (end > 0 && (w[end - 1] == '\'' || w[end - 1] == '"'))
        end--;
    const char *scheme = NULL;
    for (size_t k = 0; k + 3 <= end; k++)
        if (w[k] == ':' && w[k + 1] == '/' && w[k + 2] == '/') {
            scheme = w + k + 3;
            break;
        }
    if (scheme) {
        size_t s0 = (size_t)(scheme - w);
        for (; i < s0; i++)
            PUT(w[i]);
        /* user:password@host */
        size_t host_end = s0;
        while (host_end < end && w[host_end] != '/' && w[host_end] != '?' && w[host_end] != '#')
            host_end++;
        const char *at_sign = memchr(w + s0, '@', host_end - s0);
        if (at_sign) {
            for (const char *r = "***@"; *r; r++)
                PUT(*r);
            i = (size_t)(at_sign - w) + 1;
        }
    }
    for (; i < end; i++) {
        if (scheme && (w[i] == '?' || w[i] == '#')) { /* a URL's query or fragment */
            PUT(w[i]);
            for (const char *r = "***"; *r; r++)
                PUT(*r);
            i = end;
            break;
        }
        PUT(w[i]);
    }
    for (i = end; i < n; i++)
        PUT(w[i]);
#undef PUT
}

void tc_shard_redact(const char *text, char *out, size_t cap) {
    if (cap == 0) return;
    size_t at = 0, n = strlen(text);
    for (size_t i = 0; i < n;) {
        if (is_space(text[i])) {
            if (at + 1 < cap) out[at++] = text[i] == '\n' || text[i] == '\r' ? ' ' : text[i];
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !is_space(text[j]))
            j++;
        redact_word(text + i, j - i, out, cap, &at);
        i = j;
    }
    out[at] = 0;
}

void tc_shard_display(const char *name, char *out, size_t cap) {
    tc_shard_redact(name, out, cap);
}

/* ---- curl ---- */

static int on_path(const char *prog) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/bin:/bin";
    while (*path) {
        const char *c = strchr(path, ':');
        size_t n = c ? (size_t)(c - path) : strlen(path);
        char p[4096];
        if (n > 0 && n + strlen(prog) + 2 < sizeof p) {
            snprintf(p, sizeof p, "%.*s/%s", (int)n, path, prog);
            if (access(p, X_OK) == 0 && tc_data_is_regular(p)) return 1;
        }
        if (!c) break;
        path = c + 1;
    }
    return 0;
}

tc_status tc_shard_check(const char *name) {
    if (is_http(name) && !on_path("curl")) {
        char shown[600];
        tc_shard_display(name, shown, sizeof shown);
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "shard %s: http(s) shards are read through curl, which is not on PATH "
                       "(install curl, or give a pipe: command)",
                       shown);
    }
    return TC_OK;
}

/* `curl ... 'URL'` with the URL quoted for /bin/sh */
static char *curl_command(const char *url) {
    size_t n = strlen(url);
    char *c = malloc(64 + 4 * n);
    if (!c) return NULL;
    size_t at = (size_t)sprintf(c, "curl -s -S -f -L '");
    for (size_t i = 0; i < n; i++) {
        if (url[i] == '\'') {
            memcpy(c + at, "'\\''", 4);
            at += 4;
        } else {
            c[at++] = url[i];
        }
    }
    c[at++] = '\'';
    c[at] = 0;
    return c;
}

/* ---- the command ---- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cancelled(const tc_shard_stream *s) {
    return s->o.cancel && __atomic_load_n(s->o.cancel, __ATOMIC_RELAXED);
}

static void keep_tail(tc_shard_stream *s, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s->tail_n == TAIL_BYTES) { /* drop the older half */
            memmove(s->tail, s->tail + TAIL_BYTES / 2, TAIL_BYTES / 2);
            s->tail_n = TAIL_BYTES / 2;
        }
        s->tail[s->tail_n++] = b[i];
    }
}

/* reads what the command wrote to standard error so far (non-blocking) */
static void drain_stderr(tc_shard_stream *s) {
    while (s->err_fd >= 0) {
        char b[1024];
        ssize_t k = read(s->err_fd, b, sizeof b);
        if (k > 0) {
            keep_tail(s, b, (size_t)k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k == 0) {
            close(s->err_fd);
            s->err_fd = -1;
        }
        break; /* EAGAIN: nothing more now */
    }
}

/* the last line(s) of standard error, redacted, on one line */
static void stderr_tail(tc_shard_stream *s, char *out, size_t cap) {
    drain_stderr(s);
    char raw[TAIL_BYTES + 1];
    size_t n = s->tail_n;
    while (n > 0 && (s->tail[n - 1] == '\n' || s->tail[n - 1] == '\r' || s->tail[n - 1] == ' '))
        n--;
    size_t from = n > 300 ? n - 300 : 0;
    memcpy(raw, s->tail + from, n - from);
    raw[n - from] = 0;
    for (char *p = raw; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
    if (!raw[0]) {
        snprintf(out, cap, "(nothing on standard error)");
        return;
    }
    char red[TAIL_BYTES + 64];
    tc_shard_redact(raw, red, sizeof red);
    snprintf(out, cap, "standard error: %s%.500s", from ? "..." : "", red);
}

static void describe_status(int status, char *out, size_t cap) {
    if (WIFEXITED(status))
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, cap, "ended with wait status %d", status);
}

/* exit 0, or SIGPIPE (the reader stopped early; webdataset ignores it too) */
static int status_ok(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 128 + SIGPIPE;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE;
}

/* waits up to `seconds` for the command to end; 1 when it has */
static int reap(tc_shard_stream *s, double seconds) {
    if (s->pid <= 0 || s->reaped) return 1;
    double until = now_s() + seconds;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid || (r < 0 && errno == ECHILD)) {
            s->reaped = 1;
            s->status = r == s->pid ? st : 0;
            return 1;
        }
        drain_stderr(s);
        if (now_s() >= until || cancelled(s)) return 0;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void stop_command(tc_shard_stream *s) {
    if (s->pid <= 0 || s->reaped) return;
    kill(-s->pid, SIGTERM);
    if (!reap(s, 0.5)) {
        kill(-s->pid, SIGKILL);
        int st = 0;
        while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR) {
        }
        s->reaped = 1;
        s->status = st;
    }
}

static tc_status spawn(tc_shard_stream *s, const char *cmd) {
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (pipe(out) != 0 || pipe(err) != 0) {
        int e = errno;
        if (out[0] >= 0) close(out[0]), close(out[1]);
        return tc_fail(TC_ERR_IO, "shard %s: cannot make a pipe: %s", s->shown, strerror(e));
    }
    /* the parent's ends must not leak into later commands */
    fcntl(out[0], F_SETFD, FD_CLOEXEC);
    fcntl(err[0], F_SETFD, FD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, err[0]);
    posix_spawn_file_actions_addclose(&fa, out[1]);
    posix_spawn_file_actions_addclose(&fa, err[1]);
    /* its own process group (stopped as a whole), default signal handling */
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigaddset(&def, SIGTERM);
    sigaddset(&def, SIGINT);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid = 0;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(out[1]);
    close(err[1]);
    if (rc != 0) {
        close(out[0]);
        close(err[0]);
        return tc_fail(TC_ERR_IO, "shard %s: cannot run /bin/sh: %s", s->shown, strerror(rc));
    }
    fcntl(err[0], F_SETFL, fcntl(err[0], F_GETFL) | O_NONBLOCK);
    s->pid = pid;
    s->fd = out[0];
    s->err_fd = err[0];
    return TC_OK;
}

tc_status tc_shard_stream_open(const char *name, const tc_stream_opts *o, tc_shard_stream **out) {
    *out = NULL;
    tc_shard_stream *s = calloc(1, sizeof *s);
    if (!s) return tc_fail(TC_ERR_OOM, "shard: out of memory");
    s->fd = s->err_fd = -1;
    if (o)
        s->o = *o;
    else
        tc_stream_opts_init(&s->o);
    if (s->o.timeout_s <= 0) s->o.timeout_s = 300;
    tc_shard_display(name, s->shown, sizeof s->shown);
    tc_status st = TC_OK;
    if (!tc_shard_is_remote(name)) {
        char why[160];
        s->fd = tc_data_open_regular(name, why, sizeof why);
        if (s->fd < 0) st = tc_fail(TC_ERR_IO, "shard %s: %s", s->shown, why);
    } else if (starts_with(name, "pipe:")) {
        st = spawn(s, name + 5);
    } else if ((st = tc_shard_check(name)) == TC_OK) {
        char *cmd = curl_command(name);
        st = cmd ? spawn(s, cmd) : tc_fail(TC_ERR_OOM, "shard %s: out of memory", s->shown);
        free(cmd);
    }
    if (st != TC_OK) {
        free(s);
        return st;
    }
    *out = s;
    return TC_OK;
}

/* the command's failure once its output has ended (or broke off) */
static tc_status command_failed(tc_shard_stream *s, const char *what) {
    char how[160], tail[600];
    describe_status(s->status, how, sizeof how);
    stderr_tail(s, tail, sizeof tail);
    s->failed = 1;
    return tc_fail(TC_ERR_IO, "shard %s: %scommand %s; %s", s->shown, what, how, tail);
}

/* end of the command's output: wait for it and check how it ended */
static ssize_t command_eof(tc_shard_stream *s) {
    close(s->fd);
    s->fd = -1;
    if (!reap(s, (double)s->o.timeout_s)) {
        stop_command(s);
        s->failed = 1;
        tc_fail(TC_ERR_IO,
                "shard %s: the command closed its output but did not end within %d s; killed",
                s->shown, s->o.timeout_s);
        return -1;
    }
    if (!status_ok(s->status)) {
        command_failed(s, "");
        return -1;
    }
    return 0;
}

ssize_t tc_shard_stream_read(tc_shard_stream *s, void *buf, size_t n) {
    if (s->fd < 0) return 0;
    if (s->pid <= 0) {
        for (;;) {
            ssize_t k = read(s->fd, buf, n);
            if (k >= 0) return k;
            if (errno == EINTR) continue;
            tc_fail(TC_ERR_IO, "shard %s: read error: %s", s->shown, strerror(errno));
            return -1;
        }
    }
    double deadline = now_s() + (double)s->o.timeout_s;
    for (;;) {
        if (cancelled(s)) {
            stop_command(s);
            s->failed = 1;
            tc_fail(TC_ERR_INTERRUPTED, "shard %s: stopped", s->shown);
            return -1;
        }
        struct pollfd p[2] = {{s->fd, POLLIN, 0}, {s->err_fd, POLLIN, 0}};
        double left = deadline - now_s();
        int wait_ms = left <= 0 ? 0 : left > 0.2 ? 200 : (int)(left * 1000) + 1;
        int r = poll(p, s->err_fd >= 0 ? 2 : 1, wait_ms);
        if (r < 0 && errno != EINTR) {
            tc_fail(TC_ERR_IO, "shard %s: poll: %s", s->shown, strerror(errno));
            return -1;
        }
        if (r > 0 && s->err_fd >= 0 && p[1].revents) drain_stderr(s);
        if (r > 0 && p[0].revents) {
            ssize_t k = read(s->fd, buf, n);
            if (k > 0) return k;
            if (k == 0) return command_eof(s);
            if (errno != EINTR && errno != EAGAIN) {
                tc_fail(TC_ERR_IO, "shard %s: read error: %s", s->shown, strerror(errno));
                return -1;
            }
            continue;
        }
        if (now_s() >= deadline) {
            char tail[600];
            stop_command(s);
            stderr_tail(s, tail, sizeof tail);
            s->failed = 1;
            tc_fail(TC_ERR_IO,
                    "shard %s: no data for %d s (timeout; data.pipe_timeout sets it), command "
                    "killed; %s",
                    s->shown, s->o.timeout_s, tail);
            return -1;
        }
    }
}

off_t tc_shard_stream_skip(tc_shard_stream *s, off_t n) {
    if (s->pid > 0 || s->fd < 0 || n < 0) return -1;
    struct stat st;
    off_t cur = lseek(s->fd, 0, SEEK_CUR);
    if (cur < 0 || fstat(s->fd, &st) != 0) return -1;
    /* never past the end: a truncated member must show as truncated */
    if (n > st.st_size - cur) n = st.st_size > cur ? st.st_size - cur : 0;
    if (lseek(s->fd, n, SEEK_CUR) < 0) return -1;
    return n;
}

tc_status tc_shard_stream_close(tc_shard_stream *s, int complete) {
    if (!s) return TC_OK;
    tc_status st = TC_OK;
    if (s->pid > 0 && !s->reaped) {
        if (complete && !s->failed) {
            /* the tar's end is read; let the command finish writing (record
             * padding) and see how it ends */
            char *sink = malloc(65536);
            size_t drained = 0;
            ssize_t k = sink ? 1 : 0;
            while (s->fd >= 0 && k > 0 && drained < DRAIN_LIMIT) {
                k = tc_shard_stream_read(s, sink, 65536);
                if (k > 0) drained += (size_t)k;
            }
            free(sink);
            if (k < 0) st = TC_ERR_IO; /* message set by the read */
        }
        stop_command(s);
    } else if (s->pid > 0 && complete && !s->failed && !status_ok(s->status)) {
        st = command_failed(s, "");
    }
    if (s->fd >= 0) close(s->fd);
    if (s->err_fd >= 0) close(s->err_fd);
    free(s);
    return st;
}
