/* graphs: the ops queued between graph_begin and graph_end recorded by
 * stream capture, instantiated once and replayed with graph_launch; and the
 * switch that fills the fast paths' optional ops.
 *
 * the capture is thread-local (cudaStreamCaptureModeThreadLocal), so the
 * loader's threads may keep allocating page-locked batches meanwhile. a
 * capture that the runtime refuses (an op that waits for the device, a
 * segment table upload, anything not capturable) ends in graph_end with an
 * error and the backend as it was before graph_begin: the failure recorded
 * while capturing is dropped, since the caller runs the same ops again as
 * plain launches and any real fault is then recorded there. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_internal.h"

struct tc_graph {
    cudaGraphExec_t exec;
};

tc_status tc_cuda_graph_begin(tc_backend *b) {
    tc_cuda_backend *cu = tc_cu(b);
    if (cu->err != TC_OK) return tc_fail(cu->err, "%s", cu->err_msg);
    if (cu->capturing) return tc_fail(TC_ERR_ARG, "cuda graph_begin: already capturing");
    cudaError_t e = cudaStreamBeginCapture(cu->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return tc_fail(TC_ERR_UNSUPPORTED, "cuda graph_begin: %s", cudaGetErrorString(e));
    }
    cu->capturing = 1;
    return TC_OK;
}

tc_status tc_cuda_graph_end(tc_backend *b, tc_graph **out) {
    tc_cuda_backend *cu = tc_cu(b);
    *out = NULL;
    if (!cu->capturing) return tc_fail(TC_ERR_ARG, "cuda graph_end: no capture to end");
    cu->capturing = 0;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cu->stream, &graph);
    char why[512];
    if (cu->err != TC_OK)
        snprintf(why, sizeof why, "%s", cu->err_msg);
    else if (e != cudaSuccess || !graph)
        snprintf(why, sizeof why, "%s",
                 cudaGetErrorString(e != cudaSuccess ? e : cudaErrorUnknown));
    else
        why[0] = 0;
    tc_graph *g = NULL;
    if (!why[0]) {
        g = (tc_graph *)calloc(1, sizeof *g);
        if (!g)
            snprintf(why, sizeof why, "no host memory");
        else if ((e = cudaGraphInstantiate(&g->exec, graph, 0)) != cudaSuccess)
            snprintf(why, sizeof why, "instantiate: %s", cudaGetErrorString(e));
    }
    if (graph) cudaGraphDestroy(graph);
    if (why[0]) {
        free(g);
        (void)cudaGetLastError();
        cu->err = TC_OK; /* see the top of the file */
        cu->err_msg[0] = 0;
        return tc_fail(TC_ERR_UNSUPPORTED, "cuda graph capture failed: %s", why);
    }
    *out = g;
    return TC_OK;
}

tc_status tc_cuda_graph_launch(tc_backend *b, tc_graph *g) {
    tc_cuda_backend *cu = tc_cu(b);
    if (!g) return tc_fail(TC_ERR_ARG, "cuda graph_launch: no graph");
    if (!tc_cuda_ok(cu, cudaGraphLaunch(g->exec, cu->stream), "graph launch"))
        return tc_fail(cu->err, "%s", cu->err_msg);
    return TC_OK;
}

void tc_cuda_graph_free(tc_backend *b, tc_graph *g) {
    tc_cuda_backend *cu = tc_cu(b);
    if (!g) return;
    /* a replay may still be queued */
    tc_cuda_ok(cu, cudaStreamSynchronize(cu->stream), "graph free: synchronize");
    cudaGraphExecDestroy(g->exec);
    free(g);
}

void tc_cuda_fast_paths(tc_cuda_backend *cu) {
    tc_backend *t = &cu->base;
    if (cu->opt.gemm_epilogue) {
        t->caps.gemm_bias_grad_epilogue = 1;
        t->linear_residual_forward = tc_cuda_linear_residual_forward;
        /* the GEMM library's GELU is the tanh form: the fp32 mode, which is
         * held to the CPU within 1e-5, keeps the exact GELU kernel */
        if (!cu->fp32) {
            t->linear_gelu_forward = tc_cuda_linear_gelu_forward;
            t->linear_gelu_backward = tc_cuda_linear_gelu_backward;
        }
    }
    if (cu->opt.cuda_graph) {
        t->graph_begin = tc_cuda_graph_begin;
        t->graph_end = tc_cuda_graph_end;
        t->graph_launch = tc_cuda_graph_launch;
        t->graph_free = tc_cuda_graph_free;
    }
}
