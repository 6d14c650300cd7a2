/* choosing a backend by name for the CLI and the scheduler:
 * "cpu", "cuda" (bf16 mixed precision), "cuda-fp32" (full fp32, for parity). */
#ifndef TC_BACKEND_SELECT_H
#define TC_BACKEND_SELECT_H

#include "backend.h"

tc_status tc_backend_open(const char *name, int threads, tc_backend **out);

#endif
