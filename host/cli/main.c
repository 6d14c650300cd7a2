/* tinyclip: the command-line program. dispatches to the commands of host/cli/. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const tc_cli_command commands[] = {
    {"tokenize", tc_cmd_tokenize, "print the CLIP token ids of texts"},
    {"embed", tc_cmd_embed, "image and text features of a checkpoint"},
    {"bench", tc_cmd_bench, "training-step and inference images/s (or --data: the data pipeline)"},
    {"inspect", tc_cmd_inspect, "parameters and GFLOPs of a model config or checkpoint"},
    {"convert", tc_cmd_convert, "convert a checkpoint to open_clip or Hugging Face layout"},
    {"shards", tc_cmd_shards, "write webdataset shards from a csv, folder or Fashion-MNIST"},
    {"train", tc_cmd_train, "run an experiment file: every stage, resumable"},
    {"eval", tc_cmd_eval, "zero-shot classification and retrieval of a checkpoint"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "usage: tinyclip [--version] COMMAND [ARGS]\n\ncommands:\n");
    for (const tc_cli_command *c = commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\nrun 'tinyclip COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("tinyclip %s\nbackends: %s\n", TC_VERSION, tc_cli_backends());
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (const tc_cli_command *c = commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "tinyclip: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
