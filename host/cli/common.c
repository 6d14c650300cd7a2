#include <stdio.h>

#include "cli.h"
#include "status.h"

int tc_cli_report(const char *what) {
    const char *msg = tc_last_error();
    if (what && what[0])
        fprintf(stderr, "tinyclip: %s: %s\n", what, msg[0] ? msg : "failed");
    else
        fprintf(stderr, "tinyclip: %s\n", msg[0] ? msg : "failed");
    return 1;
}

const char *tc_cli_backends(void) {
#ifdef TC_HAVE_CUDA
    return "cpu cuda";
#else
    return "cpu";
#endif
}
