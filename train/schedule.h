/* Learning-rate schedules with linear warmup: constant, linear decay to 0, cosine decay to 0
 * (the shapes of transformers' get_{constant,linear,cosine}_schedule_with_warmup). */
#ifndef DOPPEL_SCHEDULE_H
#define DOPPEL_SCHEDULE_H

typedef enum { DP_SCHED_CONSTANT, DP_SCHED_LINEAR, DP_SCHED_COSINE } dp_sched_kind;

typedef struct {
    dp_sched_kind kind;
    double lr;         /* peak learning rate */
    long total_steps;  /* optimizer steps of the whole run */
    long warmup_steps; /* resolved from a ratio by dp_schedule_resolve */
} dp_schedule;

/* "constant" | "linear" | "cosine" -> kind; -1 with a message otherwise. */
int dp_schedule_parse(const char *name, dp_sched_kind *kind);
const char *dp_schedule_name(dp_sched_kind kind);
/* warmup_steps >= 0 wins; otherwise ceil(warmup_ratio * total_steps). */
long dp_schedule_warmup(long total_steps, long warmup_steps, double warmup_ratio);
/* Learning rate for the optimizer step `step` (0-based: the first update uses step 0). */
double dp_schedule_lr(const dp_schedule *s, long step);

#endif
