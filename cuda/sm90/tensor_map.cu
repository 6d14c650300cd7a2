/* the host side of the TMA attention: tensor map encoding (tensor_map.h) */
#include "tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

/* looked up once (a function-local static: initialised once, thread-safe) */
static PFN_cuTensorMapEncodeTiled_v12000 att_tma_encoder(void) {
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                             &found) != cudaSuccess ||
            found != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            p = nullptr;
        }
        return (PFN_cuTensorMapEncodeTiled_v12000)p;
    }();
    return fn;
}

bool att_tma_encode(CUtensorMap *map, const att_tma_geom *g, const void *base) {
    if (att_tma_geom_check(g, (uint64_t)(uintptr_t)base) != 0) return false;
    const PFN_cuTensorMapEncodeTiled_v12000 encode = att_tma_encoder();
    if (!encode) return false;
    cuuint64_t dim[ATT_TMA_MAX_RANK], stride[ATT_TMA_MAX_RANK - 1];
    cuuint32_t box[ATT_TMA_MAX_RANK], step[ATT_TMA_MAX_RANK];
    for (int i = 0; i < g->rank; i++) {
        dim[i] = g->dim[i];
        box[i] = g->box[i];
        step[i] = 1;
        if (i + 1 < g->rank) stride[i] = g->stride[i];
    }
    const CUtensorMapDataType type =
        g->elem_bytes == 2 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    return encode(map, type, (cuuint32_t)g->rank, const_cast<void *>(base), dim, stride, box, step,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
