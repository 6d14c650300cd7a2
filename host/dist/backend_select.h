/* choosing and making a backend, once at start-up: the name ("cpu",
 * "cuda" for bf16 mixed precision, "cuda-fp32" for full fp32, for parity)
 * and the kernel choices the environment asks for. backends never read the
 * environment themselves; they get a tc_backend_options. */
#ifndef TC_BACKEND_SELECT_H
#define TC_BACKEND_SELECT_H

#include "backend.h"

/* the defaults, then the environment's kernel choices:
 *   TINYCLIP_ATTENTION=fma|mma|wgmma|tma  (unset: fma; wgmma and tma need
 *                                      compute capability 9, elsewhere they run
 *                                      as mma; tma is the TMA-fed pipeline)
 *   TINYCLIP_PATCH_EMBED=gemm|cudnn   (unset: gemm)
 *   TINYCLIP_GEMM_PLANS=off|on        (unset: off) cached matmul plans
 *   TINYCLIP_GEMM_EPILOGUE=off|on     (unset: off) fused GEMM epilogues
 *   TINYCLIP_CUDA_GRAPH=off|on        (unset: off) the step as one graph
 * the last three are the CUDA fast paths, off until a GPU run passes
 * their tests (docs/cuda.md). an unknown value fails naming the variable. */
tc_status tc_backend_options_from_env(tc_backend_options *opt);

/* makes backend `name` with opt (threads, device, kernel choices; the name
 * decides fp32) */
tc_status tc_backend_open_with(const char *name, const tc_backend_options *opt, tc_backend **out);

/* the usual start-up: the environment's options, `threads` CPU threads
 * (0 = every core), device 0 */
tc_status tc_backend_open(const char *name, int threads, tc_backend **out);

#endif
