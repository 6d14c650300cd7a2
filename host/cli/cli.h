/* subcommands of the tinyclip program. each takes the arguments after its
 * name (argv[0] is the subcommand) and returns the process exit status:
 * 0 success, 1 failure (message printed), 2 usage error. */
#ifndef TC_CLI_H
#define TC_CLI_H

typedef int (*tc_cli_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    tc_cli_fn run;
    const char *summary;
} tc_cli_command;

/* prints "tinyclip: <message>" from tc_last_error() to stderr; returns 1 */
int tc_cli_report(const char *what);

/* backends compiled into this build, e.g. "cpu cuda" */
const char *tc_cli_backends(void);

int tc_cmd_inspect(int argc, char **argv);
int tc_cmd_convert(int argc, char **argv);
int tc_cmd_embed(int argc, char **argv);
int tc_cmd_bench(int argc, char **argv);
int tc_cmd_bench_data(int argc, char **argv);
int tc_cmd_bench_loader(int argc, char **argv); /* bench --data --path / --make */
int tc_cmd_tokenize(int argc, char **argv);
int tc_cmd_shards(int argc, char **argv);
int tc_cmd_train(int argc, char **argv);
int tc_cmd_eval(int argc, char **argv);

#endif
