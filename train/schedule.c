/* Learning-rate schedules (see schedule.h). */
#include "train/schedule.h"
#include "data/base/error.h"

#include <math.h>
#include <string.h>

int dp_schedule_parse(const char *name, dp_sched_kind *kind) {
    if (!strcmp(name, "constant"))
        *kind = DP_SCHED_CONSTANT;
    else if (!strcmp(name, "linear"))
        *kind = DP_SCHED_LINEAR;
    else if (!strcmp(name, "cosine"))
        *kind = DP_SCHED_COSINE;
    else
        return dp_fail("unknown schedule '%s' (expected constant, linear or cosine)", name);
    return 0;
}

const char *dp_schedule_name(dp_sched_kind kind) {
    return kind == DP_SCHED_LINEAR ? "linear" : kind == DP_SCHED_COSINE ? "cosine" : "constant";
}

long dp_schedule_warmup(long total_steps, long warmup_steps, double warmup_ratio) {
    if (warmup_steps >= 0) return warmup_steps;
    if (!(warmup_ratio > 0)) return 0;
    return (long)ceil(warmup_ratio * (double)total_steps);
}

double dp_schedule_lr(const dp_schedule *s, long step) {
    if (step < s->warmup_steps) return s->lr * (double)step / (double)s->warmup_steps;
    if (s->kind == DP_SCHED_CONSTANT) return s->lr;
    long decay = s->total_steps - s->warmup_steps;
    if (decay <= 0) return s->kind == DP_SCHED_CONSTANT ? s->lr : 0.0;
    double progress = (double)(step - s->warmup_steps) / (double)decay;
    if (progress > 1) progress = 1;
    if (s->kind == DP_SCHED_LINEAR) return s->lr * (1.0 - progress);
    return s->lr * 0.5 * (1.0 + cos(M_PI * progress));
}
