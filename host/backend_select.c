#include "backend_select.h"

#include <string.h>

tc_status tc_backend_open(const char *name, int threads, tc_backend **out) {
    *out = NULL;
    if (!name || strcmp(name, "cpu") == 0) return tc_backend_cpu_create(out, threads);
    if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda-fp32") == 0) {
#ifdef TC_HAVE_CUDA
        return tc_backend_cuda_create(out, 0, strcmp(name, "cuda-fp32") == 0);
#else
        return tc_fail(TC_ERR_UNSUPPORTED, "backend '%s': this build has no CUDA backend", name);
#endif
    }
    return tc_fail(TC_ERR_ARG, "unknown backend '%s' (cpu, cuda, cuda-fp32)", name);
}
