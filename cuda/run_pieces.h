/* the partition of the token embedding's sorted scatter (embed.cu), in
 * plain C callable from host and device code, so that the host test
 * (tests/cuda/test_cuda_launch.c) runs the kernels' own decisions over
 * sorted ids.
 *
 * the n sorted (id, position) pairs are cut into pieces of P positions. a
 * segment is a maximal range of equal ids inside one piece; a run is a
 * maximal range of equal ids. a segment that is a whole run goes straight
 * to its dwte row; otherwise its sum goes to one of two partial slots of its
 * piece: slot 0 for the piece's first segment, slot 1 for its last (a run
 * that crosses the piece's end). the run that crosses the end of the piece
 * it starts in then adds its slot there and slot 0 of each later piece it
 * covers, in piece order. P is the smallest power of two >= 64 whose
 * partials (2 slots of C floats a piece) fit the scratch left; one piece
 * needs none, so there is always an answer, and it depends on (n, C, the
 * scratch) only, so the order of every sum is fixed for a shape. */
#ifndef TC_CUDA_RUN_PIECES_H
#define TC_CUDA_RUN_PIECES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TC_RUN_FN __host__ __device__ __forceinline__
#else
#define TC_RUN_FN static inline
#endif

#define TC_RUN_PIECE_MIN 64

TC_RUN_FN int tc_run_pieces(int n, int P) {
    return (int)(((int64_t)n + P - 1) / P);
}

TC_RUN_FN int tc_run_piece_size(size_t avail_bytes, int n, int C) {
    int64_t P = TC_RUN_PIECE_MIN;
    for (;;) {
        const int64_t pieces = ((int64_t)n + P - 1) / P;
        if (pieces <= 1) return P < INT32_MAX ? (int)P : INT32_MAX;
        if ((size_t)pieces * 2 * (size_t)C * sizeof(float) <= avail_bytes) return (int)P;
        P *= 2;
    }
}

/* where the segment [s, e) of the piece starting at p0 goes: -1 its dwte
 * row (the run lies inside the piece), else the piece's partial slot */
TC_RUN_FN int tc_run_segment_slot(const int32_t *keys, int n, int p0, int s, int e) {
    const int32_t id = keys[s];
    const int starts = s == 0 || keys[s - 1] != id;
    const int ends = e == n || keys[e] != id;
    if (starts && ends) return -1;
    return s == p0 ? 0 : 1; /* s > p0 means a run that goes on past the piece */
}

/* the run that starts in piece k and goes on past its end: 0 when there is
 * none; else its id, its slot in piece k and the last piece it covers */
TC_RUN_FN int tc_run_span(const int32_t *keys, int n, int P, int pieces, int k, int32_t *id,
                          int *slot, int *last) {
    const int p0 = k * P;
    const int p1 = n - p0 < P ? n : p0 + P;
    if (p1 >= n) return 0; /* the last piece */
    const int32_t v = keys[p1 - 1];
    if (keys[p1] != v) return 0;                                /* the last run ends here */
    if (keys[p0] == v && p0 > 0 && keys[p0 - 1] == v) return 0; /* it began earlier */
    /* the run covers piece j > k from its start exactly when keys[j P] == v;
     * the keys are sorted, so the last such piece is a binary search away
     * (piece k + 1 is one) */
    int lo = k + 1, hi = pieces - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (keys[(size_t)mid * P] == v)
            lo = mid;
        else
            hi = mid - 1;
    }
    *id = v;
    *slot = keys[p0] == v ? 0 : 1; /* it fills piece k, or starts inside it */
    *last = lo;
    return 1;
}

#endif
