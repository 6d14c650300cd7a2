/* fuzz target: arbitrary bytes as a webdataset shard. every sample the tar
 * reader groups is checked the way the loader uses it (caption UTF-8, image
 * decode with and without DCT scaling, the eval and train transforms on
 * small images); nothing may crash, leak or read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "image_decode.h"
#include "image_transform.h"
#include "source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tc_shard_reader *r = NULL;
    if (tc_wds_reader_open_memory(data, size, "fuzz.tar", &r) != TC_OK) return 0;
    static tc_image_decoder *dec;
    if (!dec && tc_image_decoder_create(&dec) != TC_OK) {
        tc_wds_reader_close(r);
        return 0;
    }
    for (int i = 0; i < 4096; i++) {
        tc_sample s;
        int eof = 0;
        if (tc_wds_reader_next(r, &s, &eof) != TC_OK || eof) break;
        if (s.caption) (void)tc_utf8_valid(s.caption, s.caption_len);
        if (s.image && s.image_len < ((size_t)4 << 20)) {
            for (int min_side = 0; min_side <= 16; min_side += 16) {
                tc_image img;
                if (tc_image_decode(dec, s.image, s.image_len, "fuzz", min_side, &img) != TC_OK)
                    continue;
                if ((int64_t)img.w * img.h <= 1 << 20) {
                    tc_transform_cfg c = tc_transform_default(8, min_side > 0);
                    float out[3 * 8 * 8];
                    tc_rng rng = tc_rng_for(1, 2, 3, (uint64_t)i);
                    (void)tc_transform_apply(&c, &img, &rng, NULL, out, NULL);
                }
                tc_image_free(&img);
            }
        }
        tc_sample_clear(&s);
    }
    tc_wds_reader_close(r);
    return 0;
}
