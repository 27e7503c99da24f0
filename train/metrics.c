#include "train/metrics.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

double metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* metrics.jsonl keeps the lines of steps up to `step`. */
static FILE *open_jsonl(const char *out, int64_t step)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    snprintf(tmp, sizeof tmp, "%s.rewrite", path);
    FILE *in = fopen(path, "r");
    if (in) {
        FILE *o = fopen(tmp, "w");
        char *line = NULL;
        size_t cap = 0;
        while (o && getline(&line, &cap, in) > 0) {
            json_t *j = json_loads(line, 0, NULL);
            json_int_t s = j ? json_integer_value(json_object_get(j, "step")) : 0;
            if (j && s <= step)
                fputs(line, o);
            json_decref(j);
        }
        free(line);
        fclose(in);
        if (o) {
            fclose(o);
            rename(tmp, path);
        }
    }
    FILE *f = fopen(path, "a");
    if (!f)
        err_set("%s: %s", path, strerror(errno));
    return f;
}

int metrics_open(struct metrics *m, const char *out, int64_t step, int tensorboard)
{
    memset(m, 0, sizeof *m);
    if (!(m->jsonl = open_jsonl(out, step)))
        return -1;
    if (tensorboard) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/logs", out);
        mkdir(dir, 0777);
        if (!(m->tb = tfevents_open(dir))) {
            metrics_close(m);
            return -1;
        }
    }
    return 0;
}

void metrics_close(struct metrics *m)
{
    if (m->tb)
        tfevents_close(m->tb);
    if (m->jsonl)
        fclose(m->jsonl);
    memset(m, 0, sizeof *m);
}

void metrics_log_step(struct metrics *m, const struct step_metrics *s)
{
    log_info("step %lld epoch %lld loss %.5f lr %.3g grad-norm %.4f %.2f steps/s %.1f img/s mem %.1f MB",
             (long long)s->step, (long long)s->epoch, s->loss, s->lr, s->grad_norm, s->steps_per_s,
             s->images_per_s, s->mem_peak / 1e6);
    json_t *j = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "step", (json_int_t)s->step, "epoch",
                          (json_int_t)s->epoch, "loss", s->loss, "lr", s->lr, "grad_norm", s->grad_norm,
                          "steps_per_s", s->steps_per_s, "images_per_s", s->images_per_s, "time", metrics_now());
    char *text = j ? json_to_string(j) : NULL;
    if (m->jsonl && text) {
        fprintf(m->jsonl, "%s\n", text);
        fflush(m->jsonl);
    }
    free(text);
    json_decref(j);
    if (m->tb) {
        double t = metrics_now();
        tfevents_scalar(m->tb, "train/loss", s->step, t, (float)s->loss);
        tfevents_scalar(m->tb, "train/lr", s->step, t, (float)s->lr);
        tfevents_scalar(m->tb, "train/grad_norm", s->step, t, (float)s->grad_norm);
        tfevents_scalar(m->tb, "train/images_per_s", s->step, t, (float)s->images_per_s);
        tfevents_flush(m->tb);
    }
}

void metrics_log_validation(struct metrics *m, int64_t step, double loss)
{
    log_info("step %lld validation loss %.5f", (long long)step, loss);
    fprintf(m->jsonl, "{\"step\":%lld,\"val_loss\":%.9g}\n", (long long)step, loss);
    fflush(m->jsonl);
    if (m->tb)
        tfevents_scalar(m->tb, "val/loss", step, metrics_now(), (float)loss);
}
