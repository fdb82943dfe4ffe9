// The MPI implementation of struct comm (core/comm.h) for host buffers.
//
// comm_mpi_create() duplicates the MPI communicator it is given, so that llamac's collectives never
// match messages of anyone else's (HDF5's, a library's) on the same group. The duplicate returns MPI
// errors instead of aborting inside MPI, so that MPI_CHECK can name the call, the file and the line
// before it aborts the whole job with MPI_Abort (a rank that aborted alone would leave the others
// waiting in a collective until the scheduler's time limit).
//
// Counts: MPI takes int counts. Every operation here is split into pieces of at most comm_mpi_chunk()
// elements (2^30 by default), so a 7B model's 6.7e9-element gradient buffer can be reduced in one call.
#pragma once
#include <mpi.h>
#include <stddef.h>

#include "core/comm.h"

// Aborts the job (all ranks) with file, line, the call and MPI's error string when `call` fails.
#define MPI_CHECK(call)                                                             \
    do {                                                                            \
        int mpi_check_rc_ = (call);                                                 \
        if (mpi_check_rc_ != MPI_SUCCESS) mpi_check_fail(__FILE__, __LINE__, #call, mpi_check_rc_); \
    } while (0)
void mpi_check_fail(const char *file, int line, const char *call, int rc) __attribute__((noreturn));

// A struct comm over a duplicate of `c` (rank and size are c's). Free with comm_mpi_destroy.
struct comm *comm_mpi_create(MPI_Comm c);
void comm_mpi_destroy(struct comm *c);
// 1 when c is an MPI communicator made by comm_mpi_create.
int comm_is_mpi(const struct comm *c);
// The duplicated MPI communicator behind c (c must be an MPI comm).
MPI_Comm comm_mpi_handle(const struct comm *c);
// Progress for a request from comm_all_reduce_start on c: 1 when it has completed (comm_wait is still
// needed to release it), 0 while in flight. Calling it lets Open MPI advance the operation while the
// caller computes. Requests of non-MPI communicators (comm_self) report 1.
int comm_mpi_test(struct comm *c, struct comm_req *req);

// Largest element count passed to a single MPI call. Tests lower it to exercise the splitting.
size_t comm_mpi_chunk(void);
void comm_mpi_set_chunk(size_t max_elems);
