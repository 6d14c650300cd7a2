#include "backend_select.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* *value = the index of the variable's value in choices (unset or empty: 0) */
static tc_status env_choice(const char *var, const char *const *choices, int *value) {
    const char *v = getenv(var);
    *value = 0;
    if (!v || !v[0]) return TC_OK;
    for (int i = 0; choices[i]; i++)
        if (strcmp(v, choices[i]) == 0) {
            *value = i;
            return TC_OK;
        }
    char list[128] = "";
    for (int i = 0; choices[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 choices[i]);
    return tc_fail(TC_ERR_ARG, "%s=%.64s: expected one of %s", var, v, list);
}

tc_status tc_backend_options_from_env(tc_backend_options *opt) {
    static const char *const attention[] = {"fma", "mma", "wgmma", "tma", NULL};
    static const char *const patch_embed[] = {"gemm", "cudnn", NULL};
    static const char *const off_on[] = {"off", "on", NULL};
    *opt = tc_backend_options_default();
    int a = 0, p = 0;
    TC_TRY(env_choice("TINYCLIP_ATTENTION", attention, &a));
    TC_TRY(env_choice("TINYCLIP_PATCH_EMBED", patch_embed, &p));
    TC_TRY(env_choice("TINYCLIP_GEMM_PLANS", off_on, &opt->gemm_plans));
    TC_TRY(env_choice("TINYCLIP_GEMM_EPILOGUE", off_on, &opt->gemm_epilogue));
    TC_TRY(env_choice("TINYCLIP_CUDA_GRAPH", off_on, &opt->cuda_graph));
    static const tc_attention_kernel kernels[] = {TC_ATTENTION_FMA, TC_ATTENTION_MMA,
                                                  TC_ATTENTION_WGMMA, TC_ATTENTION_TMA};
    opt->attention = kernels[a];
    opt->patch_embed = p ? TC_PATCH_EMBED_CONV : TC_PATCH_EMBED_GEMM;
    return TC_OK;
}

tc_status tc_backend_open_with(const char *name, const tc_backend_options *opt, tc_backend **out) {
    *out = NULL;
    tc_backend_options o = *opt;
    if (!name || strcmp(name, "cpu") == 0) return tc_backend_cpu_create(out, &o);
    if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda-fp32") == 0) {
        o.fp32 = strcmp(name, "cuda-fp32") == 0;
#ifdef TC_HAVE_CUDA
        return tc_backend_cuda_create(out, &o);
#else
        return tc_fail(TC_ERR_UNSUPPORTED, "backend '%s': this build has no CUDA backend", name);
#endif
    }
    return tc_fail(TC_ERR_ARG, "unknown backend '%s' (cpu, cuda, cuda-fp32)", name);
}

tc_status tc_backend_open(const char *name, int threads, tc_backend **out) {
    *out = NULL;
    tc_backend_options o;
    TC_TRY(tc_backend_options_from_env(&o));
    o.threads = threads;
    return tc_backend_open_with(name, &o, out);
}
