/* caption templates; see caption_templates.h. the set mixes open_clip's
 * ImageNet prompts with wording that fits small grayscale product photos. */
#include "caption_templates.h"

#include <stdio.h>
#include <string.h>

#include "image_transform.h"

static const char *const templates[] = {
    "a photo of a {}.",
    "a black and white picture of a {}.",
    "a grayscale photo of a {}.",
    "a low resolution photo of a {}.",
    "a small photo of a {}.",
    "a close-up photo of a {}.",
    "a product photo of a {}.",
    "a centered photo of a {}.",
    "a blurry photo of a {}.",
    "a cropped photo of the {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a bad photo of a {}.",
    "an image of a {}.",
    "a picture of a {}.",
    "a pixelated photo of a {}.",
    "a catalog image of a {}.",
    "a thumbnail of a {}.",
    "a monochrome image of a {}.",
    "a simple picture of one {}.",
    "itap of a {}.",
    "art of the {}.",
    "a photo of the small {}.",
    "a {} on a plain background.",
    "this is a {}.",
};

int tc_caption_template_count(void) {
    return (int)(sizeof templates / sizeof templates[0]);
}

const char *tc_caption_template(int i) {
    if (i < 0 || i >= tc_caption_template_count()) return templates[0];
    return templates[i];
}

size_t tc_caption_format(char *buf, size_t cap, int template_index, const char *class_name) {
    const char *t = tc_caption_template(template_index);
    const char *hole = strstr(t, "{}");
    int n;
    if (!hole)
        n = snprintf(buf, cap, "%s", t);
    else
        n = snprintf(buf, cap, "%.*s%s%s", (int)(hole - t), t, class_name, hole + 2);
    if (n < 0) n = 0;
    if (cap == 0) return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

int tc_caption_pick(uint64_t seed, uint64_t index) {
    return (int)(tc_mix64(seed ^ 0x63617074696f6e73ull, index) %
                 (uint64_t)tc_caption_template_count());
}
