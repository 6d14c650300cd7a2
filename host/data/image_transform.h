/* open_clip's image transforms on 8-bit RGB, reproducing PIL + torchvision:
 *   eval : Resize(S) on the shortest side (long side = int(S*long/short)),
 *          PIL antialiased bicubic, CenterCrop(S) with round-half-even
 *          offsets, ToTensor (/255), Normalize(OpenAI mean, std)
 *   train: RandomResizedCrop(S, scale, ratio) with torchvision's get_params
 *          (10 tries, then the central-crop fallback), bicubic, ToTensor,
 *          Normalize. the random numbers come from tc_rng, not torch's
 *          generator: the algorithm is the same, the draws are not.
 * the resampler is Pillow's Resample.c for 8-bit images: a = -0.5 cubic,
 * support 2 scaled by the downscale factor, coefficients normalised per
 * output pixel, 22-bit fixed point with round-half-up and clipping, two
 * separable passes (horizontal first) with a uint8 intermediate. it is
 * bit-exact with Image.resize(..., BICUBIC) on RGB images.
 * outputs are planar (3, S, S): fp32, or bf16 (round to nearest even). */
#ifndef TC_IMAGE_TRANSFORM_H
#define TC_IMAGE_TRANSFORM_H

#include <stdint.h>

#include "image_decode.h"
#include "status.h"

#define TC_OPENAI_MEAN_R 0.48145466f
#define TC_OPENAI_MEAN_G 0.4578275f
#define TC_OPENAI_MEAN_B 0.40821073f
#define TC_OPENAI_STD_R 0.26862954f
#define TC_OPENAI_STD_G 0.26130258f
#define TC_OPENAI_STD_B 0.27577711f

/* splitmix64 stream; one per sample, seeded from (seed, epoch, rank, index) */
typedef struct {
    uint64_t s;
} tc_rng;

uint64_t tc_rng_next(tc_rng *r);
double tc_rng_uniform(tc_rng *r);             /* [0, 1) */
uint64_t tc_rng_below(tc_rng *r, uint64_t n); /* [0, n), unbiased; n > 0 */
uint64_t tc_mix64(uint64_t a, uint64_t b);    /* hash of a pair, for seed derivation */
tc_rng tc_rng_for(uint64_t seed, uint64_t epoch, uint64_t rank, uint64_t index);

typedef struct {
    int top, left, height, width;
} tc_crop;

typedef struct {
    int size;                    /* S */
    int train;                   /* 1: RandomResizedCrop, 0: resize + center crop */
    double scale_min, scale_max; /* open_clip: 0.9, 1.0 */
    double ratio_min, ratio_max; /* torchvision: 3/4, 4/3 */
    float mean[3], std[3];
} tc_transform_cfg;

/* open_clip defaults for size S (OpenAI mean/std, scale 0.9-1, ratio 3/4-4/3) */
tc_transform_cfg tc_transform_default(int size, int train);

/* torchvision RandomResizedCrop.get_params on a w x h image */
tc_crop tc_rrc_params(int w, int h, double scale_min, double scale_max, double ratio_min,
                      double ratio_max, tc_rng *rng);

/* PIL img.crop(box).resize((out_w, out_h), BICUBIC) into out (out_h, out_w, 3) */
tc_status tc_resized_crop_u8(const tc_image *in, tc_crop box, int out_w, int out_h, uint8_t *out);

/* torchvision Resize(S) + CenterCrop(S) into out (S, S, 3) */
tc_status tc_eval_resize_crop_u8(const tc_image *in, int size, uint8_t *out);

/* the resized image dimensions of torchvision's Resize(S) on w x h */
void tc_resize_shortest_dims(int w, int h, int size, int *rw, int *rh);

/* ToTensor + Normalize of (h, w, 3) uint8 into planar (3, h, w) */
void tc_normalize_planar(const tc_transform_cfg *cfg, const uint8_t *hwc, int w, int h, float *chw);
void tc_normalize_planar_bf16(const tc_transform_cfg *cfg, const uint8_t *hwc, int w, int h,
                              uint16_t *chw);

uint16_t tc_f32_to_bf16(float x);

/* the whole per-sample transform; rng is used only when cfg->train.
 * out_f32 (3,S,S) or out_bf16 (3,S,S): exactly one non-NULL. scratch is
 * S*S*3 bytes or NULL (then allocated). */
tc_status tc_transform_apply(const tc_transform_cfg *cfg, const tc_image *img, tc_rng *rng,
                             uint8_t *scratch, float *out_f32, uint16_t *out_bf16);

#endif
