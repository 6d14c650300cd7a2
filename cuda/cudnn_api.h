/* cuDNN for the CUDA backend's convolutions (conv_cudnn.cu: the ViT patch
 * embedding; conv2d_cudnn.cu: the ResNet towers' convolutions), through the
 * legacy API, shared by both files:
 *   - the functions used, resolved from libcudnn.so.<major> with dlopen at
 *     backend creation (the headers are needed at build time only; a binary
 *     runs where cuDNN is not installed, without these ops)
 *   - the state: handle, descriptors, one workspace, the plan tables
 *   - error recording and algorithm choice: the first candidate of
 *     cudnnGet*Algorithm_v7 (cuDNN's heuristics, best first) that reports
 *     CUDNN_DETERMINISTIC, needs at most CONV_WORKSPACE_CAP of workspace and,
 *     in the fp32 mode, no tensor cores (no TF32). not cudnnFind*: its choice
 *     by timing can differ from run to run, and with it the bits.
 * only compiled with TC_HAVE_CUDNN. */
#ifndef TC_CUDA_CUDNN_API_H
#define TC_CUDA_CUDNN_API_H

#include <cudnn.h>
#include <dlfcn.h>

#include "cuda_internal.h"

#define CONV_THREADS 256
#define CONV_PLANS 8
#define CONV2D_PLANS 128
#define CONV_MAX_ALGOS 16
#define CONV_WORKSPACE_CAP ((size_t)256 << 20)

/* one convolution: x (N, C, H, W), w (OC, C, K, K), stride S, zero padding
 * P, y (N, OC, Ho, Wo); NHWC tensors and KRSC filters when nhwc, else NCHW
 * and KCRS */
typedef struct {
    int N, C, H, W, OC, K, S, P, Ho, Wo, nhwc;
} tc_cudnn_shape;

/* the algorithm chosen for one direction of one shape */
typedef struct {
    int ready, algo; /* algo: the direction's cudnnConvolution*Algo_t */
    cudnnMathType_t math;
    size_t ws;
} tc_cudnn_algo;

typedef enum { TC_CUDNN_FORWARD, TC_CUDNN_DATA, TC_CUDNN_FILTER } tc_cudnn_direction;

/* the patch embedding's algorithms of one shape */
typedef struct {
    int B, H, W, P, C; /* the shape; B = 0: free slot */
    tc_cudnn_algo fwd, bwd;
} conv_plan;

/* a ResNet convolution's algorithms of one shape (forward, data and filter
 * gradients); shape.N = 0: free slot */
typedef struct {
    tc_cudnn_shape shape;
    tc_cudnn_algo fwd, data, filter;
} conv2d_plan;

/* the cuDNN functions used, resolved from the library at creation */
#define DNN_FUNCS(X)                                                                               \
    X(cudnnCreate)                                                                                 \
    X(cudnnDestroy)                                                                                \
    X(cudnnSetStream)                                                                              \
    X(cudnnGetErrorString)                                                                         \
    X(cudnnGetLastErrorString)                                                                     \
    X(cudnnCreateTensorDescriptor)                                                                 \
    X(cudnnDestroyTensorDescriptor)                                                                \
    X(cudnnSetTensor4dDescriptor)                                                                  \
    X(cudnnCreateFilterDescriptor)                                                                 \
    X(cudnnDestroyFilterDescriptor)                                                                \
    X(cudnnSetFilter4dDescriptor)                                                                  \
    X(cudnnCreateConvolutionDescriptor)                                                            \
    X(cudnnDestroyConvolutionDescriptor)                                                           \
    X(cudnnSetConvolution2dDescriptor)                                                             \
    X(cudnnSetConvolutionMathType)                                                                 \
    X(cudnnGetConvolution2dForwardOutputDim)                                                       \
    X(cudnnGetConvolutionForwardAlgorithm_v7)                                                      \
    X(cudnnGetConvolutionForwardWorkspaceSize)                                                     \
    X(cudnnConvolutionForward)                                                                     \
    X(cudnnGetConvolutionBackwardDataAlgorithm_v7)                                                 \
    X(cudnnGetConvolutionBackwardDataWorkspaceSize)                                                \
    X(cudnnConvolutionBackwardData)                                                                \
    X(cudnnGetConvolutionBackwardFilterAlgorithm_v7)                                               \
    X(cudnnGetConvolutionBackwardFilterWorkspaceSize)                                              \
    X(cudnnConvolutionBackwardFilter)

typedef struct {
#define DNN_MEMBER(f) decltype(&::f) f;
    DNN_FUNCS(DNN_MEMBER)
#undef DNN_MEMBER
} dnn_api;

#define DNN_STR2(x) #x
#define DNN_STR(x) DNN_STR2(x)
/* the soname of the major version the headers describe */
#define DNN_SONAME "libcudnn.so." DNN_STR(CUDNN_MAJOR)

struct tc_cuda_conv {
    dnn_api api;
    cudnnHandle_t handle; /* created at the first call: cudnnCreate loads the libraries */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    void *workspace; /* one, grown while planning a new shape */
    size_t workspace_bytes;
    conv_plan plan[CONV_PLANS];
    int next_slot; /* round-robin replacement when all slots are taken */
    conv2d_plan plan2d[CONV2D_PLANS];
    int next_slot2d;
};

/* true on success; otherwise records "cuda <op>: cuDNN <what>: <status> (<cuDNN's message>)" */
bool tc_cudnn_ok(tc_cuda_backend *cu, cudnnStatus_t s, const char *op, const char *what);
/* the handle and descriptors, created at the first call */
bool tc_cudnn_ready(tc_cuda_backend *cu, const char *op);
/* grows the workspace to at least bytes (only while planning a new shape) */
bool tc_cudnn_workspace_reserve(tc_cuda_backend *cu, const char *op, size_t bytes);
/* resolves every function of DNN_FUNCS; false with the reason otherwise */
bool tc_cudnn_load(dnn_api *a, char *why, size_t cap);
/* the descriptors of one shape and the mode's math type (host-only calls,
 * microseconds); checks cuDNN's output shape against s */
bool tc_cudnn_describe(tc_cuda_backend *cu, const char *op, const tc_cudnn_shape *s);
/* chooses the algorithm of one direction for the described shape (the
 * descriptors are set) and reserves its workspace */
bool tc_cudnn_plan(tc_cuda_backend *cu, const char *op, tc_cudnn_direction dir,
                   const tc_cudnn_shape *s, tc_cudnn_algo *out);

#endif
