/* tensor maps of the TMA attention kernels (cuda/sm90/): the driver's
 * encoder, cuTensorMapEncodeTiled, reached through the runtime's entry-point
 * query, so that no binary links the driver library (they start, and skip
 * their GPU tests, on machines without one) */
#ifndef TC_CUDA_SM90_TENSOR_MAP_H
#define TC_CUDA_SM90_TENSOR_MAP_H

#include <cuda.h>

#include "attention_tma_layout.h"

/* encodes the map of g over the tensor at base (bf16 for 2-byte elements,
 * fp32 for 4), no interleave, no swizzle, out-of-bounds elements read as
 * zero; false (nothing launched, the caller falls back) when the geometry
 * breaks an encoder rule (att_tma_geom_check), the driver has no encoder or
 * refuses the map */
bool att_tma_encode(CUtensorMap *map, const att_tma_geom *g, const void *base);

#endif
