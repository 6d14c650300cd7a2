/* image decoding: JPEG (TurboJPEG) and PNG (libspng) bytes -> 8-bit RGB.
 * colour handling follows PIL's Image.convert('RGB') after Image.open:
 * grayscale is replicated, alpha is dropped (not composited), palettes are
 * expanded ignoring tRNS, 16-bit channels keep their high byte, CMYK/YCCK
 * JPEGs (Adobe-inverted or not) use Pillow's cmyk2rgb formula.
 * min_side > 0 lets JPEG decoding use DCT-domain scaling: the smallest
 * TurboJPEG scale factor whose result keeps the shorter side >= min_side.
 * that output differs from a full decode followed by a resize (PIL never
 * scales in the DCT domain in open_clip), so parity checks pass 0.
 * every failure returns a tc_status whose message names the sample; every
 * libjpeg-turbo and libspng call's result is checked (a JPEG without a frame
 * header fails as "no frame header", its sizes are never read unset). */
#ifndef TC_IMAGE_DECODE_H
#define TC_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* interleaved 8-bit RGB, row-major: px is (h, w, 3) */
typedef struct {
    int w, h;
    uint8_t *px;
} tc_image;

typedef enum { TC_IMG_UNKNOWN = 0, TC_IMG_JPEG, TC_IMG_PNG, TC_IMG_WEBP } tc_image_format;

/* the default limit on an image's pixels, read from its header before any
 * decoding: Pillow's Image.MAX_IMAGE_PIXELS (1024^3 / 4 / 3, about 89.5
 * Mpx). a larger image (a decompression bomb: a small file that would take
 * gigabytes once decoded) fails with TC_ERR_DATA, so the loader skips and
 * names it. the experiment's data.max_image_pixels and embed's --max-pixels
 * change it. */
#define TC_IMAGE_DEFAULT_MAX_PIXELS 89478485LL
#define TC_IMAGE_MAX_SIDE 65500

/* one decoder per thread: TurboJPEG handles are not thread-safe */
typedef struct tc_image_decoder tc_image_decoder;

tc_status tc_image_decoder_create(tc_image_decoder **out);
void tc_image_decoder_destroy(tc_image_decoder *d);
/* the pixel limit of this decoder (> 0; TC_IMAGE_DEFAULT_MAX_PIXELS at creation) */
void tc_image_decoder_set_max_pixels(tc_image_decoder *d, int64_t max_pixels);

tc_image_format tc_image_sniff(const uint8_t *data, size_t len);

/* decodes data into out (out->px malloc'd; free with tc_image_free).
 * name identifies the sample in error messages ("shard.tar: sample 000123").
 * dec may be NULL (a temporary decoder with the default pixel limit). */
tc_status tc_image_decode(tc_image_decoder *dec, const uint8_t *data, size_t len, const char *name,
                          int min_side, tc_image *out);

/* reads only the dimensions (no pixel decode) */
tc_status tc_image_probe(tc_image_decoder *dec, const uint8_t *data, size_t len, const char *name,
                         int *w, int *h);

void tc_image_free(tc_image *img);

/* encodes 8-bit pixels (channels 1 = gray, 3 = RGB) as PNG; *png malloc'd */
tc_status tc_png_encode(const uint8_t *px, int w, int h, int channels, uint8_t **png, size_t *len);

/* encodes RGB pixels as a baseline 4:2:0 JPEG of the given quality; *jpg malloc'd */
tc_status tc_jpeg_encode(tc_image_decoder *dec, const tc_image *img, int quality, uint8_t **jpg,
                         size_t *len);

#endif
