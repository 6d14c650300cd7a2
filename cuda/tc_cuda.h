/* the C-visible extras of the CUDA backend (the backend itself is created
 * with tc_backend_cuda_create, declared in backend.h). */
#ifndef TC_CUDA_H
#define TC_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* number of CUDA devices visible to this process; 0 when there are none or
 * the runtime cannot talk to a driver, with the reason (the CUDA runtime's
 * error string) written to why */
int tc_cuda_device_count(char *why, size_t cap);

/* name and compute capability of a device, for logs ("NVIDIA H100 ... sm_90") */
void tc_cuda_device_name(int device, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
