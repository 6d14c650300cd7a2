/* the zero-shot prompt sets of open_clip: the 80 OpenAI ImageNet templates
 * and their 7-prompt subset; "{}" stands for the class name. */
#ifndef TC_ZEROSHOT_TEMPLATES_H
#define TC_ZEROSHOT_TEMPLATES_H

typedef enum { TC_TEMPLATES_OPENAI = 0, TC_TEMPLATES_SIMPLE = 1 } tc_zeroshot_template_set;

int tc_zeroshot_template_count(tc_zeroshot_template_set set);
const char *tc_zeroshot_template(tc_zeroshot_template_set set, int i);

#endif
