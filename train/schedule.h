/* Learning-rate schedules, as diffusers' get_scheduler gives them: linear
 * warmup from 0 over warmup_steps, then constant, a linear decay to 0 at
 * total_steps, or half a cosine to 0. */
#ifndef DIT_TRAIN_SCHEDULE_H
#define DIT_TRAIN_SCHEDULE_H

#include <stdint.h>

enum lr_schedule { LR_CONSTANT, LR_LINEAR, LR_COSINE };

struct lr_config {
    enum lr_schedule schedule;
    double lr;
    int64_t warmup_steps, total_steps;
};

/* Parses "constant", "linear", "cosine"; -1 otherwise. */
int lr_schedule_parse(const char *name, enum lr_schedule *out);
const char *lr_schedule_name(enum lr_schedule s);
/* The learning rate at optimizer step `step` (0-based). */
double lr_at(const struct lr_config *c, int64_t step);

#endif
