/* finite-difference gradient checks of backend ops (tests/engine/
 * test_cpu_gradcheck.c and test_cpu_gradcheck_resnet.c). an op's fp32 forward is compared with a
 * naive double-precision reference (GC_FWD_TOL relative to the tensor's max); then a random linear
 * functional L = sum(r * out) of its outputs: the analytic fp32 gradients from the backward (with
 * dout = r) are compared with central differences of L computed through the double reference
 * (GC_GRAD_TOL). gradients documented as "+=" are checked on buffers pre-filled with known values,
 * gradients documented as "written" on buffers pre-filled with GC_GARBAGE. */
#ifndef TC_TEST_GRADCHECK_H
#define TC_TEST_GRADCHECK_H

#include <stddef.h>

#include "backend.h"

#define GC_FD_H 1e-5     /* central-difference step in double */
#define GC_GRAD_TOL 1e-3 /* fp32 analytic vs double FD, relative to the tensor's max */
#define GC_GARBAGE 1e30f /* pre-fill of written ("=") outputs */
#define GC_FWD_TOL 1e-5  /* fp32 forward vs the double reference */

/* the CPU backend (2 threads) the helpers allocate on; NULL on failure (printed) */
tc_backend *tc_gradcheck_backend(void);

/* buffers of the backend, filled: uniform [-scale, scale), a constant, a copy */
float *gc_alloc(size_t n);
float *gc_rand(size_t n, float scale);
float *gc_const(size_t n, float v);
float *gc_copy(const float *x, size_t n);
void gc_free(void *p);
/* a malloc'd double copy */
double *gc_to_double(const float *x, size_t n);

/* a case: its double reference forward and the weights r of L = sum r out */
typedef struct fd_case fd_case;
struct fd_case {
    void (*forward)(const fd_case *c, double *out);
    const double *r;
    size_t nout;
};

/* L = sum r out through the double forward */
double gc_fd_loss(const fd_case *c);
/* g (n, malloc'd) = dL/dx by central differences, x a double input of the case */
float *gc_fd_grad(const fd_case *c, double *x, size_t n);
/* fp32 forward output vs the case's double forward (fails the test) */
void gc_check_forward(const fd_case *c, const float *got, const char *what);
/* analytic vs finite-difference gradient (fails the test) */
void gc_check_grad(const float *analytic, const float *fd, size_t n, const char *what);
/* the analytic gradient of a "+=" output: subtract the known pre-fill */
void gc_sub_prefill(float *g, const float *pre, size_t n);

#endif
