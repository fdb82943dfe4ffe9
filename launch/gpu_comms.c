// Binding ranks to GPUs and choosing the device communicators' transport; the rule is in gpu_comms.h.
#include "launch/gpu_comms.h"

#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "launch/gpu.h"
#include "launch/mpi_comm.h"

int gpu_bind(struct gpu_comms *gc, const struct grid *g) {
    memset(gc, 0, sizeof(*gc));
    gc->gpus_on_node = gpu_count();
    int over = g->ranks_per_node > gc->gpus_on_node;  // collective first: every rank gets here
    gc->shared = (int)comm_all_reduce_f64(g->world, over, COMM_MAX);
    if (gc->gpus_on_node == 0) return err_set("run.backend = cuda: no CUDA device is visible on this machine");
    gc->device = g->local_rank % gc->gpus_on_node;
    if (gc->shared && g->world_rank == 0)
        log_warn("%d ranks on a node with %d GPU%s: ranks share GPUs round-robin (rank r of a node uses GPU r %% %d), "
                 "and the GPU communicators go through host memory (parallel.gpu_comm = staged)",
                 g->ranks_per_node, gc->gpus_on_node, gc->gpus_on_node == 1 ? "" : "s", gc->gpus_on_node);
    return gpu_use(gc->device);
}

#ifdef LLAMAC_WITH_CUDA
int gpu_comms_create(struct gpu_comms *gc, struct grid *g, const struct backend *be, const char *want) {
    int nccl = dev_comm_have_nccl() && !gc->shared;
    if (!strcmp(want, "nccl") && !nccl)
        return err_set("parallel.gpu_comm = nccl: %s", !dev_comm_have_nccl()
                                                           ? "this llamac was built without NCCL (use staged or auto)"
                                                           : "ranks share a GPU, which NCCL does not allow (use staged "
                                                             "or auto, or start one rank per GPU)");
    if (strcmp(want, "nccl") && strcmp(want, "staged") && strcmp(want, "auto"))
        return err_set("parallel.gpu_comm = '%s': expected auto, nccl or staged", want);
    gc->transport = !strcmp(want, "staged") ? DEV_STAGED : nccl ? DEV_NCCL : DEV_STAGED;
    gc->tp_host = comm_mpi_create(comm_mpi_handle(g->tp));
    gc->dp_host = comm_mpi_create(comm_mpi_handle(g->dp));
    gc->tp = dev_comm_create(gc->tp_host, be, gc->transport);
    gc->dp = gc->tp ? dev_comm_create(gc->dp_host, be, gc->transport) : NULL;
    return gc->tp && gc->dp ? 0 : -1;
}

void gpu_comms_free(struct gpu_comms *gc) {
    dev_comm_destroy(gc->dp);
    dev_comm_destroy(gc->tp);
    comm_mpi_destroy(gc->dp_host);
    comm_mpi_destroy(gc->tp_host);
    gc->dp = gc->tp = gc->dp_host = gc->tp_host = NULL;
}
#else
// Without CUDA there are no device communicators.
int dev_comm_have_nccl(void) { return 0; }
const char *dev_transport_name(enum dev_transport t) { return t == DEV_NCCL ? "nccl" : "staged"; }
double dev_comm_take_seconds(struct comm *c) { return 0; }
int gpu_comms_create(struct gpu_comms *gc, struct grid *g, const struct backend *be, const char *want) {
    return err_set("this llamac was built without CUDA");
}
void gpu_comms_free(struct gpu_comms *gc) {}
#endif
