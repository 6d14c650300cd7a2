/* OpenBLAS set-up for the CPU backend: thread count, and the kernel family.
 *
 * OpenBLAS built with DYNAMIC_ARCH picks its kernels from the CPU model
 * number; a release older than the CPU (0.3.21 on Sapphire/Emerald Rapids)
 * does not know the model and falls back to the SSE3 "Prescott" kernels,
 * several times slower than the AVX-512 ones the CPU can run. when that
 * happens, and the user has not chosen a core with OPENBLAS_CORETYPE, the
 * kernel table is selected again from the CPU's feature flags through
 * OpenBLAS's own exported dynamic-arch entry points. the symbols are weak, so
 * a build against an OpenBLAS without them (static, or not DYNAMIC_ARCH)
 * simply keeps what the library chose. */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

/* cores OpenBLAS falls back to that predate AVX2 */
static int is_fallback_core(const char *name) {
    static const char *const old[] = {"Prescott", "Core2",  "Penryn",    "Dunnington", "Nehalem",
                                      "Atom",     "Katmai", "Northwood", "Banias"};
    if (!name) return 0;
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        if (strcmp(name, old[i]) == 0) return 1;
    return 0;
}

static void select_kernels_once(void) {
    if (getenv("OPENBLAS_CORETYPE")) return; /* the user's choice wins */
    if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) return;
    if (!is_fallback_core(openblas_get_corename())) return;
    __builtin_cpu_init();
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want) return;
    /* no BLAS call is in flight: this runs before the first backend exists */
    setenv("OPENBLAS_CORETYPE", want, 1);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    unsetenv("OPENBLAS_CORETYPE");
}

const char *tc_backend_cpu_blas_core(void) {
    return openblas_get_corename();
}

void tc_cpu_blas_init(int threads) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, select_kernels_once);
    /* OpenBLAS keeps one process-wide thread count; match the handle's */
    openblas_set_num_threads(threads);
}
