/* shards streamed from commands and HTTP (shard_stream.h, wds_reader.c):
 *   - pipe:cat over local shards gives the batches the files give;
 *   - a command that fails at start, one that breaks off mid-stream and one
 *     that hangs are named with their exit status (or the timeout) and the
 *     tail of their standard error, retried, then skipped as bad shards
 *     while the good shards go on; a retry that succeeds continues the shard
 *     exactly where it broke off (the same batches as the files);
 *   - shards that cannot be read count against the error-rate bound;
 *   - destroying a loader whose command hangs returns at once;
 *   - http:// shards through curl from a loopback server started here
 *     (127.0.0.1, a fixed number of requests, stops by itself), a missing
 *     file named with curl's status; skipped visibly without curl;
 *   - nothing printed carries a URL's query string, password or a NAME=value
 *     word of the command. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "image_decode.h"
#include "loader.h"
#include "shard_stream.h"
#include "shard_writer.h"
#include "testutil.h"

static tc_tokenizer *tok;
static double bound = 1.0; /* the loader's max_bad_fraction in drain() */
static char *tmp, dir[512];

static int setup(void **state) {
    (void)state;
    if (tc_tokenizer_create(&tok, NULL) != TC_OK)
        tc_skip_test("no tokenizer vocabulary: %s", tc_last_error());
    tmp = tc_make_tempdir("pipe");
    snprintf(dir, sizeof dir, "%s/shards", tmp);
    tc_shard_writer *w;
    assert_int_equal(tc_shard_writer_create(dir, 25, &w), TC_OK);
    uint64_t rs = 3;
    for (int i = 0; i < 100; i++) { /* 4 shards of 25 */
        uint8_t px[20 * 14 * 3];
        for (size_t k = 0; k < sizeof px; k++)
            px[k] = (uint8_t)(tc_test_rand(&rs) >> 11);
        uint8_t *png;
        size_t len;
        assert_int_equal(tc_png_encode(px, 20, 14, 3, &png, &len), TC_OK);
        char key[16], cap[32];
        snprintf(key, sizeof key, "s%04d", i);
        int cl = snprintf(cap, sizeof cap, "thing %d", i);
        assert_int_equal(tc_shard_writer_add(w, key, "png", png, len, cap, (size_t)cl, i, NULL),
                         TC_OK);
        free(png);
    }
    assert_int_equal(tc_shard_writer_close(w, NULL, NULL), TC_OK);
    tc_shard_writer_destroy(w);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tc_tokenizer_destroy(tok);
    tc_rmtree(tmp);
    free(tmp);
    return 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    int n;           /* samples delivered */
    int labels[400]; /* in order */
    uint64_t hash;   /* of every batch's pixels and tokens */
    int64_t bad_shards;
    tc_status st;
    char *log;
} result;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* one eval pass (file order) or one training epoch over spec */
static result drain(const char *spec, int train, const tc_stream_opts *so) {
    result r;
    memset(&r, 0, sizeof r);
    r.hash = 1469598103934665603ull;
    FILE *log = tmpfile();
    tc_loader_cfg c;
    tc_loader_cfg_init(&c);
    c.data = spec;
    c.source.kind = "wds";
    if (so) c.source.stream = *so;
    c.batch_size = 10;
    c.image_size = 16;
    c.context_length = 8;
    c.train = train;
    c.seed = 4;
    c.shuffle_buffer = 20;
    c.epochs = 1;
    c.tokenizer = tok;
    c.log = log;
    c.max_bad_fraction = bound;
    if (train) c.source.num_samples = 100;
    tc_loader *l;
    r.st = tc_loader_create(&c, NULL, &l);
    if (r.st == TC_OK) {
        tc_batch *b;
        while ((r.st = tc_loader_next(l, &b)) == TC_OK && b) {
            for (int i = 0; i < b->n && r.n < 400; i++)
                r.labels[r.n++] = b->labels[i];
            r.hash = fnv(r.hash, b->images, sizeof(float) * 3 * 16 * 16 * (size_t)b->n);
            r.hash = fnv(r.hash, b->tokens, sizeof(int32_t) * 8 * (size_t)b->n);
            tc_loader_release(l, b);
        }
        tc_loader_stats(l, NULL, NULL, &r.bad_shards);
        tc_loader_destroy(l);
    }
    fflush(log);
    long n = ftell(log);
    rewind(log);
    r.log = calloc((size_t)n + 1, 1);
    if (n > 0 && fread(r.log, 1, (size_t)n, log) != (size_t)n) r.log[0] = 0;
    fclose(log);
    return r;
}

static tc_stream_opts quick(int retries, int timeout_s) {
    tc_stream_opts o;
    tc_stream_opts_init(&o);
    o.retries = retries;
    o.backoff_ms = 20;
    o.timeout_s = timeout_s;
    return o;
}

static void test_pipe_cat(void **state) {
    (void)state;
    char files[1200], piped[1400];
    snprintf(files, sizeof files, "%s/{000000..000003}.tar", dir);
    snprintf(piped, sizeof piped, "pipe:cat '%s'/{000000..000003}.tar", dir);
    for (int train = 0; train < 2; train++) {
        result a = drain(files, train, NULL), b = drain(piped, train, NULL);
        if (a.st != TC_OK || b.st != TC_OK) fail_msg("%s", tc_last_error());
        printf("%s: %d samples from files, %d through pipe:cat\n", train ? "train" : "eval", a.n,
               b.n);
        assert_int_equal(a.n, 100);
        assert_int_equal(b.n, a.n);
        assert_memory_equal(a.labels, b.labels, sizeof(int) * (size_t)a.n);
        assert_true(a.hash == b.hash);
        assert_int_equal(b.bad_shards, 0);
        free(a.log);
        free(b.log);
    }
}

static void test_pipe_failures(void **state) {
    (void)state;
    char spec[16384];
    tc_stream_opts so = quick(2, 20);
    /* shard 1 fails at start, saying why on stderr with a signed URL in it */
    snprintf(spec, sizeof spec,
             "pipe:cat '%s/000000.tar'::pipe:echo 'no access to https://u:pw@h.example/b/1.tar"
             "?X-Sig=SECRETSIG' >&2; exit 3::pipe:cat '%s/000002.tar'",
             dir, dir);
    result r = drain(spec, 0, &so);
    printf("fail at start:\n%s", r.log);
    assert_int_equal(r.st, TC_OK);
    assert_int_equal(r.n, 50);
    assert_int_equal(r.bad_shards, 1);
    assert_non_null(strstr(r.log, "command exited with status 3"));
    assert_non_null(
        strstr(r.log, "standard error: no access to https://***@h.example/b/1.tar?***"));
    assert_non_null(strstr(r.log, "retry 1 of 2"));
    assert_non_null(strstr(r.log, "retry 2 of 2"));
    assert_non_null(strstr(r.log, "(after all retries)"));
    assert_null(strstr(r.log, "SECRETSIG"));
    assert_null(strstr(r.log, "pw@"));
    free(r.log);
    /* shard 1 breaks off after 5000 bytes, every time: its complete samples
     * come once, in order, the rest of it is skipped, shard 2 goes on */
    snprintf(spec, sizeof spec,
             "pipe:cat '%s/000000.tar'::pipe:head -c 5000 '%s/000001.tar'; echo broken pipe >&2; "
             "exit 5::pipe:cat '%s/000002.tar'",
             dir, dir, dir);
    r = drain(spec, 0, &so);
    printf("fail mid-stream:\n%s", r.log);
    assert_int_equal(r.st, TC_OK);
    assert_int_equal(r.bad_shards, 1);
    assert_non_null(strstr(r.log, "command exited with status 5; standard error: broken pipe"));
    int from1 = r.n - 50;
    assert_true(from1 > 0 && from1 < 25);
    for (int i = 0; i < r.n; i++) {
        int want = i < 25 ? i : i < 25 + from1 ? 25 + (i - 25) : 50 + (i - 25 - from1);
        if (r.labels[i] != want) fail_msg("sample %d is %d, expected %d", i, r.labels[i], want);
    }
    free(r.log);
    /* it breaks off the first time only: the retry continues the shard where
     * it broke off, and the batches equal the files' (training order too) */
    char flag[600], files[600];
    snprintf(flag, sizeof flag, "%s/once", tmp);
    snprintf(files, sizeof files, "%s/{000000..000003}.tar", dir);
    for (int train = 0; train < 2; train++) {
        remove(flag);
        snprintf(spec, sizeof spec,
                 "pipe:cat '%s/000000.tar'::pipe:if [ -e '%s' ]; then cat '%s/000001.tar'; "
                 "else touch '%s'; head -c 7000 '%s/000001.tar'; exit 4; fi::"
                 "pipe:cat '%s'/{000002..000003}.tar",
                 dir, flag, dir, flag, dir, dir);
        r = drain(spec, train, &so);
        result f = drain(files, train, NULL);
        printf("broken once (%s): %d samples\n%s", train ? "train" : "eval", r.n, r.log);
        assert_int_equal(r.st, TC_OK);
        assert_int_equal(r.bad_shards, 0);
        assert_non_null(strstr(r.log, "retry 1 of 2"));
        assert_int_equal(r.n, f.n);
        assert_memory_equal(r.labels, f.labels, sizeof(int) * (size_t)r.n);
        assert_true(r.hash == f.hash);
        free(r.log);
        free(f.log);
    }
}

/* shards that cannot be read count against the error-rate bound, as a
 * fraction of the shards opened */
static void test_shard_bound(void **state) {
    (void)state;
    char spec[4096];
    tc_stream_opts so = quick(0, 20);
    /* 15 good shards (the same one, made distinct by a shell comment), then 10 failing */
    snprintf(spec, sizeof spec, "pipe:cat '%s/000000.tar' #{01..15}::pipe:exit 1 #{01..10}", dir);
    bound = 1.0;
    result r = drain(spec, 0, &so);
    assert_int_equal(r.st, TC_OK);
    assert_int_equal(r.bad_shards, 10);
    assert_int_equal(r.n, 15 * 25);
    free(r.log);
    bound = 0.05;
    r = drain(spec, 0, &so);
    bound = 1.0;
    printf("bound 5%%: %s\n", tc_last_error());
    assert_int_equal(r.st, TC_ERR_DATA);
    assert_non_null(strstr(tc_last_error(), "5 of 20 shards could not be read (25.0% > 5.0%), "
                                            "stopping; last: shard pipe:exit 1 #05: command "
                                            "exited with status 1"));
    free(r.log);
}

static void test_pipe_hang(void **state) {
    (void)state;
    char spec[4096];
    /* a command that sends part of a shard and then nothing: killed after the
     * timeout, named, retried once, skipped */
    tc_stream_opts so = quick(1, 2);
    snprintf(spec, sizeof spec,
             "pipe:head -c 3000 '%s/000001.tar'; sleep 600::pipe:cat '%s/000002.tar'", dir, dir);
    double t0 = now_s();
    result r = drain(spec, 0, &so);
    double dt = now_s() - t0;
    printf("hang (%.1f s):\n%s", dt, r.log);
    assert_int_equal(r.st, TC_OK);
    assert_int_equal(r.bad_shards, 1);
    /* what came before the hang (at most a sample), then all of shard 2 */
    assert_true(r.n >= 25 && r.n <= 27);
    for (int i = 0; i < 25; i++)
        assert_int_equal(r.labels[r.n - 25 + i], 50 + i);
    assert_non_null(strstr(r.log, "sleep 600: no data for 2 s (timeout; data.pipe_timeout sets "
                                  "it), command killed"));
    assert_true(dt < 30.0);
    free(r.log);
    /* the default timeout is minutes */
    tc_stream_opts d;
    tc_stream_opts_init(&d);
    assert_int_equal(d.timeout_s, 300);
    /* a loader stopped while its command hangs does not wait for the timeout */
    tc_loader_cfg c;
    tc_loader_cfg_init(&c);
    c.data = "pipe:sleep 600";
    c.source.kind = "wds";
    c.image_size = 16;
    c.tokenizer = tok;
    c.epochs = 1;
    c.quiet = 1;
    tc_loader *l;
    assert_int_equal(tc_loader_create(&c, NULL, &l), TC_OK);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    t0 = now_s();
    tc_loader_destroy(l);
    dt = now_s() - t0;
    printf("destroyed while the command hangs: %.2f s\n", dt);
    assert_true(dt < 5.0);
}

/* ---- a loopback HTTP server: GET /NAME serves dir/NAME; it answers at most
 * `left` requests and stops after `until` seconds, whatever comes ---- */

typedef struct {
    int fd, left;
    double until;
    int served;
} server;

static void *serve(void *arg) {
    server *s = arg;
    while (__atomic_load_n(&s->left, __ATOMIC_RELAXED) > 0 && now_s() < s->until) {
        struct timeval tv = {1, 0};
        setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) continue;
        __atomic_fetch_sub(&s->left, 1, __ATOMIC_RELAXED);
        char req[2048];
        ssize_t n = recv(c, req, sizeof req - 1, 0);
        req[n > 0 ? n : 0] = 0;
        char name[256] = "";
        if (sscanf(req, "GET /%255s", name) != 1) name[0] = 0;
        name[strcspn(name, "?")] = 0; /* the query string is not part of the file */
        char path[1600];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        size_t len = 0;
        char *body = strchr(name, '/') || strstr(name, "..") ? NULL : tc_read_file(path, &len);
        char head[256];
        int hl = body ? snprintf(head, sizeof head,
                                 "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n"
                                 "Content-Type: application/x-tar\r\n\r\n",
                                 len)
                      : snprintf(head, sizeof head,
                                 "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        if (send(c, head, (size_t)hl, MSG_NOSIGNAL) == hl && body) send(c, body, len, MSG_NOSIGNAL);
        s->served++;
        free(body);
        close(c);
    }
    return NULL;
}

static void test_http(void **state) {
    (void)state;
    if (system("command -v curl >/dev/null 2>&1") != 0) {
        printf("SKIP: http shards: curl is not installed (scripts/setup installs it)\n");
        return;
    }
    server s = {socket(AF_INET, SOCK_STREAM, 0), 12, now_s() + 60, 0};
    assert_true(s.fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0; /* a free port */
    socklen_t al = sizeof a;
    assert_int_equal(bind(s.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s.fd, 8), 0);
    assert_int_equal(getsockname(s.fd, (struct sockaddr *)&a, &al), 0);
    int port = ntohs(a.sin_port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, serve, &s), 0);
    char spec[2048], files[1200];
    snprintf(spec, sizeof spec, "http://127.0.0.1:%d/{000000..000003}.tar?token=HIDDEN", port);
    snprintf(files, sizeof files, "%s/{000000..000003}.tar", dir);
    tc_stream_opts so = quick(0, 20);
    result r = drain(spec, 0, &so), f = drain(files, 0, NULL);
    printf("http: %d samples through curl from 127.0.0.1:%d\n%s", r.n, port, r.log);
    assert_int_equal(r.st, TC_OK);
    assert_int_equal(r.n, 100);
    assert_memory_equal(r.labels, f.labels, sizeof(int) * 100);
    assert_true(r.hash == f.hash);
    free(r.log);
    free(f.log);
    /* a shard the server does not have: curl's status (22: HTTP error) */
    snprintf(spec, sizeof spec,
             "http://127.0.0.1:%d/000000.tar::http://127.0.0.1:%d/missing.tar?sig=HIDDEN", port,
             port);
    r = drain(spec, 0, &so);
    printf("http, one shard missing:\n%s", r.log);
    assert_int_equal(r.st, TC_OK);
    assert_int_equal(r.n, 25);
    assert_int_equal(r.bad_shards, 1);
    assert_non_null(strstr(r.log, "shard http://127.0.0.1"));
    assert_non_null(strstr(r.log, "/missing.tar?***: command exited with status 22"));
    assert_null(strstr(r.log, "HIDDEN"));
    free(r.log);
    __atomic_store_n(&s.left, 0, __ATOMIC_RELAXED); /* stop after the request in progress */
    pthread_join(th, NULL);
    close(s.fd);
    printf("the server answered %d requests\n", s.served);
    assert_true(s.served >= 6);
}

static void test_redaction_and_curl_check(void **state) {
    (void)state;
    char out[1024];
    tc_shard_redact("AWS_SECRET_ACCESS_KEY=abc123 pipe:curl -s -L "
                    "'https://user:pa55@host.example/data/{0..9}.tar?X-Amz-Signature=f00d&x=1'",
                    out, sizeof out);
    printf("redacted: %s\n", out);
    assert_null(strstr(out, "abc123"));
    assert_null(strstr(out, "pa55"));
    assert_null(strstr(out, "f00d"));
    assert_non_null(strstr(out, "AWS_SECRET_ACCESS_KEY=***"));
    assert_non_null(strstr(out, "'https://***@host.example/data/{0..9}.tar?***'"));
    tc_shard_redact("pipe:aws s3 cp s3://bucket/00001.tar - # x?y", out, sizeof out);
    assert_string_equal(out, "pipe:aws s3 cp s3://bucket/00001.tar - # x?y");
    /* http(s) shards need curl: without it on PATH, a clear refusal at open */
    char *path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("PATH", tmp, 1);
    tc_source *src = NULL;
    tc_status st = tc_source_open("https://host.example/{0..3}.tar?sig=x", NULL, &src);
    if (path) setenv("PATH", path, 1);
    free(path);
    assert_int_equal(st, TC_ERR_UNSUPPORTED);
    printf("without curl: %s\n", tc_last_error());
    assert_non_null(strstr(tc_last_error(), "read through curl, which is not on PATH"));
    assert_null(strstr(tc_last_error(), "sig=x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipe_cat),    cmocka_unit_test(test_pipe_failures),
        cmocka_unit_test(test_shard_bound), cmocka_unit_test(test_pipe_hang),
        cmocka_unit_test(test_http),        cmocka_unit_test(test_redaction_and_curl_check),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
