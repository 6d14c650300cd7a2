#include "step_graph.h"

#include <stddef.h>

int tc_step_key_equal(const tc_step_key *a, const tc_step_key *b) {
    return a->batch == b->batch && a->accum_steps == b->accum_steps && a->distill == b->distill &&
           a->clip == b->clip && a->fixed_scale == b->fixed_scale &&
           a->config_epoch == b->config_epoch;
}

tc_step_mode tc_step_graph_decide(const tc_step_graph_state *s, const tc_step_env *env,
                                  const tc_step_key *key, const char **why) {
    const char *w = NULL;
    tc_step_mode mode = TC_STEP_LAUNCH;
    if (!env->backend_graphs)
        w = "the backend records no graphs";
    else if (s->disabled)
        w = "a recording failed earlier";
    else if (env->distributed)
        w = "data parallel: collectives are not recorded";
    else if (env->masked)
        w = "masks installed (mask phase)";
    else if (s->have_graph && tc_step_key_equal(&s->graph_key, key))
        mode = TC_STEP_REPLAY;
    else if (s->have_last && tc_step_key_equal(&s->last_key, key))
        mode = TC_STEP_CAPTURE;
    else
        w = s->have_last ? "the step changed (batch or configuration): launches once first"
                         : "first step: launches once first";
    if (why) *why = mode == TC_STEP_CAPTURE ? "recording" : w;
    return mode;
}

void tc_step_graph_note(tc_step_graph_state *s, tc_step_mode mode, const tc_step_key *key, int ok) {
    s->have_last = 1;
    s->last_key = *key;
    switch (mode) {
    case TC_STEP_LAUNCH: s->launched++; break;
    case TC_STEP_REPLAY: s->replayed++; break;
    case TC_STEP_CAPTURE:
        if (ok) {
            s->captured++;
            s->have_graph = 1;
            s->graph_key = *key;
        } else {
            s->disabled = 1;
            s->have_graph = 0;
            s->launched++;
        }
        break;
    }
}
