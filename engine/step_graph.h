/* when a training step runs as a recorded graph (backend graph_begin ..
 * graph_launch) and when as plain launches; in plain C so that a test
 * checks every rule without a device.
 *
 * a graph fixes every pointer and value it was recorded with, so a step is
 * recorded only when the next ones will look the same (its key) and
 * nothing in it talks to the host or to other processes:
 *   - the backend must offer graphs (CUDA with TINYCLIP_CUDA_GRAPH=on);
 *   - data parallel steps run collectives: launches;
 *   - masks installed (the mask phase of automatic inheritance, which also
 *     reads each step's result on the host): launches;
 *   - a step whose key differs from the last step's runs as launches first
 *     (the first step of a trainer, a new batch size, a new configuration),
 *     so that every matmul plan, table and library is made outside the
 *     recording; the next step with that key is recorded, the ones after it
 *     replay the recording;
 *   - a recording the backend refused turns graphs off for the trainer.
 * the learning rate changes every step: the step reads it from a device
 * scalar written before each replay (tc_adamw_hparams.lr_dev). */
#ifndef TC_STEP_GRAPH_H
#define TC_STEP_GRAPH_H

typedef enum { TC_STEP_LAUNCH = 0, TC_STEP_CAPTURE = 1, TC_STEP_REPLAY = 2 } tc_step_mode;

/* what a step looks like: a change makes a recording stale */
typedef struct {
    int batch, accum_steps, distill, clip, fixed_scale;
    long long config_epoch; /* bumped by every trainer setter */
} tc_step_key;

/* what the step's surroundings allow */
typedef struct {
    int backend_graphs; /* the backend has every graph op */
    int distributed;    /* a comm with more than one rank */
    int masked;         /* masks installed on the student */
} tc_step_env;

typedef struct {
    int have_graph; /* a recording is held, of key graph_key */
    tc_step_key graph_key;
    int have_last; /* a step has run, of key last_key */
    tc_step_key last_key;
    int disabled; /* a recording failed: launches from then on */
    long long launched, captured, replayed;
} tc_step_graph_state;

/* the mode of the next step; *why says why it is not a replay (NULL then) */
tc_step_mode tc_step_graph_decide(const tc_step_graph_state *s, const tc_step_env *env,
                                  const tc_step_key *key, const char **why);
/* after a step of mode ran with key; ok = 0 when a recording failed */
void tc_step_graph_note(tc_step_graph_state *s, tc_step_mode mode, const tc_step_key *key, int ok);
int tc_step_key_equal(const tc_step_key *a, const tc_step_key *b);

#endif
