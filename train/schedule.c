#include "train/schedule.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {"constant", "linear", "cosine"};

int lr_schedule_parse(const char *name, enum lr_schedule *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (enum lr_schedule)i;
            return 0;
        }
    return -1;
}

const char *lr_schedule_name(enum lr_schedule s)
{
    return (unsigned)s < 3 ? names[s] : "unknown";
}

double lr_at(const struct lr_config *c, int64_t step)
{
    double w = (double)c->warmup_steps;
    if (step < c->warmup_steps)
        return c->lr * (double)step / fmax(1.0, w);
    double progress = (double)(step - c->warmup_steps) / fmax(1.0, (double)(c->total_steps - c->warmup_steps));
    switch (c->schedule) {
    case LR_LINEAR:
        return c->lr * fmax(0.0, 1.0 - progress);
    case LR_COSINE:
        return c->lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
    default:
        return c->lr;
    }
}
