/* the NCCL comm (cuda/comm_nccl.cu): the data-parallel collectives of the
 * CUDA backend on device memory, queued on the backend's stream (no host
 * synchronisation per call), bootstrapped through a host comm (MPI): rank 0
 * makes the ncclUniqueId and broadcasts it with boot->host_broadcast. the
 * host_* calls, barrier and abort go to the bootstrap comm, which the caller
 * keeps alive and destroys after this one.
 *
 * lost peers: before each collective the previous one's completion event is
 * polled against timeout_s seconds (the caller's; `tinyclip train` takes
 * TINYCLIP_COMM_TIMEOUT, default 45, through host/dist/world.h) and NCCL's
 * asynchronous error is checked; on either the NCCL communicator is aborted
 * and the call fails with TC_ERR_INTERRUPTED. */
#ifndef TC_COMM_NCCL_H
#define TC_COMM_NCCL_H

#ifdef __cplusplus
extern "C" {
#endif

#include "backend.h"
#include "comm.h"

/* be: the CUDA backend of this rank (its device and stream); timeout_s (> 0):
 * how long a collective may wait for a peer */
tc_status tc_comm_nccl_create(tc_comm **out, tc_comm *boot, tc_backend *be, double timeout_s);

#ifdef __cplusplus
}
#endif

#endif
