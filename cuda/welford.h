/* one-pass row statistics (count, mean, M2 = sum of squared deviations) in
 * fp32, shared by the layernorm kernels (layernorm.cu) and the host test
 * that checks their accuracy on hostile rows (tests/cuda/test_cuda_launch.c).
 * plain C, callable from host and device code.
 *
 * a chunk of V elements is folded by its own mean and squared deviations,
 * then merged by Chan's update; with V = 1 that is Welford's update. unlike
 * sum and sum of squares, nothing cancels when |mean| >> std. */
#ifndef TC_CUDA_WELFORD_H
#define TC_CUDA_WELFORD_H

#ifdef __CUDACC__
#define TC_WELFORD_FN __host__ __device__ __forceinline__
#else
#define TC_WELFORD_FN static inline
#endif

/* (n, mean, m2) <- the statistics of both sets. counts are exact in fp32 up
 * to 2^24 elements; two empty sets stay empty */
TC_WELFORD_FN void tc_welford_merge(float *n, float *mean, float *m2, float nb, float meanb,
                                    float m2b) {
    const float nn = *n + nb;
    if (nn == 0.0f) return;
    const float d = meanb - *mean;
    const float fb = nb / nn;
    *mean += d * fb;
    *m2 += m2b + d * d * *n * fb;
    *n = nn;
}

/* folds the V elements f[0..V-1] (V a power of two, so 1/V is exact) */
TC_WELFORD_FN void tc_welford_add(float *n, float *mean, float *m2, const float *f, int V) {
    float s = 0.0f;
    for (int k = 0; k < V; k++)
        s += f[k];
    const float mb = s * (1.0f / (float)V);
    float q = 0.0f;
    for (int k = 0; k < V; k++) {
        const float d = f[k] - mb;
        q += d * d;
    }
    tc_welford_merge(n, mean, m2, (float)V, mb, q);
}

#endif
