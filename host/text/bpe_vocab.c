#include "bpe_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#define MAX_VOCAB_BYTES (64u << 20)

const char *tc_bpe_vocab_default_path(void) {
    const char *env = getenv("TINYCLIP_VOCAB");
    if (env && *env) return env;
    return TC_SOURCE_DIR "/third_party/vocab/bpe_simple_vocab_16e6.txt.gz";
}

tc_status tc_bpe_vocab_read(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    /* gzopen would create nothing but says little about a missing file */
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return tc_fail(TC_ERR_IO,
                       "%s: cannot open the BPE vocabulary (run scripts/setup, or set "
                       "TINYCLIP_VOCAB)",
                       path);
    fclose(probe);
    gzFile f = gzopen(path, "rb");
    if (!f) return tc_fail(TC_ERR_IO, "%s: cannot open the BPE vocabulary", path);
    size_t cap = 4u << 20, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        gzclose(f);
        return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_VOCAB_BYTES) {
                free(buf);
                gzclose(f);
                return tc_fail(TC_ERR_FORMAT, "%s: BPE vocabulary larger than %u MiB", path,
                               MAX_VOCAB_BYTES >> 20);
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                gzclose(f);
                return tc_fail(TC_ERR_OOM, "%s: out of memory", path);
            }
            buf = nb;
        }
        int got = gzread(f, buf + n, (unsigned)(cap - n));
        if (got < 0) {
            int errnum = 0;
            const char *msg = gzerror(f, &errnum);
            tc_status st = tc_fail(TC_ERR_FORMAT, "%s: corrupt BPE vocabulary (%s)", path,
                                   msg ? msg : "gzip error");
            free(buf);
            gzclose(f);
            return st;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return TC_OK;
}

void tc_bpe_byte_table(int order[256], uint32_t cp[256]) {
    int n = 0, used[256] = {0};
    for (int b = '!'; b <= '~'; b++)
        order[n++] = b, used[b] = 1;
    for (int b = 0xA1; b <= 0xAC; b++)
        order[n++] = b, used[b] = 1;
    for (int b = 0xAE; b <= 0xFF; b++)
        order[n++] = b, used[b] = 1;
    for (int b = 0; b < 256; b++)
        if (!used[b]) order[n++] = b;
    for (int i = 0; i < 256; i++)
        cp[order[i]] = i < 188 ? (uint32_t)order[i] : 256u + (uint32_t)(i - 188);
}
