/* caption templates for datasets that only have class names (Fashion-MNIST,
 * image folders): "a photo of a {}." style sentences, one picked per sample
 * by a hash of (seed, sample index) so the caption of a sample never
 * changes between runs, epochs or ranks. */
#ifndef TC_CAPTION_TEMPLATES_H
#define TC_CAPTION_TEMPLATES_H

#include <stddef.h>
#include <stdint.h>

int tc_caption_template_count(void);
const char *tc_caption_template(int i); /* contains one "{}" */

/* writes template i with "{}" replaced by class_name; returns the length
 * (truncated to cap-1 like snprintf) */
size_t tc_caption_format(char *buf, size_t cap, int template_index, const char *class_name);

/* the template chosen for sample `index` of a dataset seeded with `seed` */
int tc_caption_pick(uint64_t seed, uint64_t index);

#endif
