/* which segment table of the CUDA backend a sum_squares or AdamW call uses.
 * a trainer hands the two ops their own lists (a ResNet's gradient norm
 * leaves out tensors AdamW updates), so the backend keeps TC_CUDA_SEG_SLOTS
 * tables: a call whose list equals a kept one uses it as it is (no upload, no
 * stream sync, so a step stays capturable as a graph); another list replaces
 * the table used least recently. plain C, tested on the host by
 * tests/cuda/test_cuda_launch.c. */
#ifndef TC_CUDA_SEG_SLOTS_H
#define TC_CUDA_SEG_SLOTS_H

#include "backend.h"

#define TC_CUDA_SEG_SLOTS 2

/* the list a slot holds (host: a copy; NULL: empty) and when it was last used */
typedef struct {
    tc_param_segment *host;
    int count;
    unsigned long long used;
} tc_seg_key;

/* field by field: the struct's padding bytes are not part of the value */
static inline int tc_seg_same(const tc_param_segment *a, int na, const tc_param_segment *b,
                              int nb) {
    if (!a || na != nb) return 0;
    for (int s = 0; s < na; s++)
        if (a[s].offset != b[s].offset || a[s].count != b[s].count ||
            a[s].weight_decay != b[s].weight_decay)
            return 0;
    return 1;
}

/* the slot for (segs, nseg): *hit = 1 and the slot holding it, else *hit = 0
 * and the slot to replace: an empty one, or the one used least recently */
static inline int tc_seg_slot_pick(const tc_seg_key *const *slots, int n,
                                   const tc_param_segment *segs, int nseg, int *hit) {
    int victim = 0;
    for (int i = 0; i < n; i++) {
        if (tc_seg_same(slots[i]->host, slots[i]->count, segs, nseg)) {
            *hit = 1;
            return i;
        }
        if (!slots[victim]->host) continue; /* an empty slot stays the choice */
        if (!slots[i]->host || slots[i]->used < slots[victim]->used) victim = i;
    }
    *hit = 0;
    return victim;
}

#endif
