/* The run's metrics: metrics.jsonl (one JSON object a line) and, when
 * asked, TensorBoard event files under logs/. A resumed run keeps the
 * lines up to its checkpoint and rewrites what came after. */
#ifndef DIT_TRAIN_METRICS_H
#define DIT_TRAIN_METRICS_H

#include "libcommon/tfevents.h"

#include <stdint.h>
#include <stdio.h>

struct metrics {
    FILE *jsonl;
    struct tfevents *tb; /* NULL without TensorBoard */
};

struct step_metrics {
    int64_t step, epoch;
    double loss, lr, grad_norm, steps_per_s, images_per_s;
    int64_t mem_peak;
};

/* Opens OUT/metrics.jsonl keeping the lines of steps <= step, and OUT/logs
 * for TensorBoard when tensorboard is set. -1 with err_set(). */
int metrics_open(struct metrics *m, const char *out, int64_t step, int tensorboard);
void metrics_close(struct metrics *m);
/* A log line on stderr, a JSONL line and the TensorBoard scalars. */
void metrics_log_step(struct metrics *m, const struct step_metrics *s);
void metrics_log_validation(struct metrics *m, int64_t step, double loss);
/* Seconds since the epoch, as the logs record time. */
double metrics_now(void);

#endif
