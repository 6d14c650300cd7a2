/* tinyclip tokenize [--context N] [--vocab PATH] TEXT...: prints, per text,
 * one line with its CLIP token ids from SOT to EOT (no padding). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tinyclip tokenize [--context N] [--vocab PATH] TEXT...\n"
            "  prints one line per TEXT: its token ids from <start_of_text> (49406)\n"
            "  to <end_of_text> (49407), cut to N ids (default 77) as open_clip does.\n"
            "  the vocabulary defaults to $TINYCLIP_VOCAB, else %s\n",
            tc_bpe_vocab_default_path());
}

int tc_cmd_tokenize(int argc, char **argv) {
    int context = 77;
    const char *vocab = NULL;
    int a = 1;
    for (; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[a], "--context") == 0 || strcmp(argv[a], "--vocab") == 0) {
            if (a + 1 >= argc) {
                fprintf(stderr, "tinyclip tokenize: %s needs a value\n", argv[a]);
                return 2;
            }
            if (argv[a][2] == 'v') {
                vocab = argv[++a];
            } else {
                char *end = NULL;
                long v = strtol(argv[++a], &end, 10);
                if (!end || *end || end == argv[a] || v < 1 || v > 1000000) {
                    fprintf(
                        stderr,
                        "tinyclip tokenize: --context must be an integer in 1..1000000, got '%s'\n",
                        argv[a]);
                    return 2;
                }
                context = (int)v;
            }
        } else if (strcmp(argv[a], "--") == 0) {
            a++;
            break;
        } else if (argv[a][0] == '-' && argv[a][1] == '-') {
            fprintf(stderr, "tinyclip tokenize: unknown option '%s'\n", argv[a]);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (a >= argc) {
        usage(stderr);
        return 2;
    }
    tc_tokenizer *t = NULL;
    if (tc_tokenizer_create(&t, vocab) != TC_OK) return tc_cli_report("tokenize");
    int32_t *ids = malloc((size_t)context * sizeof *ids);
    if (!ids) {
        tc_tokenizer_destroy(t);
        fprintf(stderr, "tinyclip tokenize: out of memory\n");
        return 1;
    }
    int rc = 0;
    for (; a < argc; a++) {
        int n = 0;
        if (tc_tokenize(t, argv[a], strlen(argv[a]), ids, context, &n) != TC_OK) {
            rc = tc_cli_report("tokenize");
            break;
        }
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
    }
    free(ids);
    tc_tokenizer_destroy(t);
    return rc;
}
