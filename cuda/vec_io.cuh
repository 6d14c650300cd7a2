/* 16-byte loads and stores of activations as fp32 registers, for the row
 * kernels (layernorm.cu) and the elementwise kernels (elementwise.cu).
 *
 * tc_ldv<V>(f, p) / tc_stv<V>(p, f) move V consecutive elements between
 * memory and f[0..V-1]: V = 1 is the scalar access, V = TC_VEC(T) one
 * 16-byte access (4 fp32 or 8 bf16; p must be 16-byte aligned, which the
 * launchers check with tc_cuda_rows_vectorizable / tc_cuda_all_aligned16).
 * bf16 to fp32 is exact (the 16 bits become the high half of the float);
 * fp32 to bf16 rounds to nearest even, as tc_tof does, so a kernel gives the
 * same bits on its vector and scalar paths. */
#ifndef TC_CUDA_VEC_IO_CUH
#define TC_CUDA_VEC_IO_CUH

#include "cuda_internal.h"

#define TC_VEC(T) ((int)(16 / sizeof(T)))

__device__ __forceinline__ void tc_ld16(float *f, const float *p) {
    const float4 v = *reinterpret_cast<const float4 *>(p);
    f[0] = v.x;
    f[1] = v.y;
    f[2] = v.z;
    f[3] = v.w;
}

__device__ __forceinline__ void tc_ld16(float *f, const __nv_bfloat16 *p) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) { /* little endian: element 2k is the low half */
        f[2 * k] = __uint_as_float(w[k] << 16);
        f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}

__device__ __forceinline__ void tc_st16(float *p, const float *f) {
    *reinterpret_cast<float4 *>(p) = make_float4(f[0], f[1], f[2], f[3]);
}

__device__ __forceinline__ void tc_st16(__nv_bfloat16 *p, const float *f) {
    unsigned w[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const unsigned lo = __bfloat16_as_ushort(__float2bfloat16_rn(f[2 * k]));
        const unsigned hi = __bfloat16_as_ushort(__float2bfloat16_rn(f[2 * k + 1]));
        w[k] = lo | (hi << 16);
    }
    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

template <int V, typename T> __device__ __forceinline__ void tc_ldv(float *f, const T *p) {
    static_assert(V == 1 || V == TC_VEC(T), "a vector is one element or 16 bytes");
    if constexpr (V == 1)
        f[0] = tc_ldf(p);
    else
        tc_ld16(f, p);
}

template <int V, typename T> __device__ __forceinline__ void tc_stv(T *p, const float *f) {
    static_assert(V == 1 || V == TC_VEC(T), "a vector is one element or 16 bytes");
    if constexpr (V == 1)
        p[0] = tc_tof<T>(f[0]);
    else
        tc_st16(p, f);
}

/* x as stored in T and read back (the rounding of a bf16 store) */
template <typename T> __device__ __forceinline__ float tc_round_act(float x);
template <> __device__ __forceinline__ float tc_round_act<float>(float x) {
    return x;
}
template <> __device__ __forceinline__ float tc_round_act<__nv_bfloat16>(float x) {
    return __bfloat162float(__float2bfloat16_rn(x));
}

/* calls FN<act type, vector width>(args...): the 16-byte path when vec is
 * true, the scalar path otherwise */
#define TC_ACT_VEC_DISPATCH(cu, vec, FN, ...)                                                      \
    do {                                                                                           \
        if ((cu)->fp32) {                                                                          \
            if (vec)                                                                               \
                FN<float, TC_VEC(float)>(__VA_ARGS__);                                             \
            else                                                                                   \
                FN<float, 1>(__VA_ARGS__);                                                         \
        } else {                                                                                   \
            if (vec)                                                                               \
                FN<__nv_bfloat16, TC_VEC(__nv_bfloat16)>(__VA_ARGS__);                             \
            else                                                                                   \
                FN<__nv_bfloat16, 1>(__VA_ARGS__);                                                 \
        }                                                                                          \
    } while (0)

#endif
