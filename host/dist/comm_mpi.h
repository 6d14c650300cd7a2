/* the MPI comm (host/dist/comm_mpi.c) and the launch detection of `tinyclip train`.
 *
 * tc_comm_launched_world() reads the environment mpirun (Open MPI, MPICH,
 * Intel MPI) or Slurm's srun set for every rank: > 1 means this process is
 * one rank of a multi-process run and must create the MPI comm. without MPI
 * in the build such a launch is an error rather than N independent runs.
 *
 * collectives are non-blocking MPI calls polled with a deadline: a peer that
 * died or hangs makes every other rank fail its collective within
 * timeout_s seconds (tc_comm_timeout_from_env in world.h reads
 * TINYCLIP_COMM_TIMEOUT, default 45) with a message naming the
 * operation, its sequence number and, for a rank that exited, that rank; the
 * caller then stops (tc_comm.abort ends the whole job). */
#ifndef TC_COMM_MPI_H
#define TC_COMM_MPI_H

#include "comm.h"

/* the world size the launcher announced, 1 when not launched by one */
int tc_comm_launched_world(void);

/* MPI_Init (thread level FUNNELED) and a comm over MPI_COMM_WORLD; host
 * memory buffers (CPU backend); a collective fails after waiting timeout_s
 * seconds (> 0) for a peer. TC_ERR_UNSUPPORTED when built without MPI. */
tc_status tc_comm_mpi_create(tc_comm **out, double timeout_s);

/* 1 when this build has MPI */
int tc_comm_mpi_available(void);

#endif
