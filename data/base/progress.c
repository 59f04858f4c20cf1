/* Progress bar / periodic lines with rate and ETA. */
#include "data/base/progress.h"
#include "data/base/error.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct dp_progress {
    dp_progress_opts o;
    char label[64], unit[16], note[128];
    int64_t total, done;
    double t0, last_draw;
    bool color;
};

double dp_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void dp_format_duration(char *out, size_t cap, double s) {
    if (s < 0 || s > 1e8) {
        snprintf(out, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

dp_progress *dp_progress_start(const char *label, int64_t total, const char *unit,
                               const dp_progress_opts *opts) {
    dp_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL; /* progress is best effort: a NULL meter is accepted everywhere */
    if (opts) p->o = *opts;
    if (!p->o.out) p->o.out = stderr;
    if (!p->o.clock) p->o.clock = dp_now_seconds;
    if (p->o.plain_interval <= 0) p->o.plain_interval = 10.0;
    if (p->o.style == DP_PROGRESS_AUTO)
        p->o.style = isatty(fileno(p->o.out)) ? DP_PROGRESS_BAR : DP_PROGRESS_PLAIN;
    const char *nc = getenv("NO_COLOR");
    p->color = p->o.style == DP_PROGRESS_BAR && !(nc && nc[0]);
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
    p->total = total;
    p->t0 = p->o.clock();
    /* plain lines start after one interval, so short work prints only its final line */
    p->last_draw = p->o.style == DP_PROGRESS_BAR ? -1e9 : p->t0;
    return p;
}

static void draw(dp_progress *p, bool final) {
    double now = p->o.clock(), el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    char eta[32], elapsed[32], figures[160];
    dp_format_duration(elapsed, sizeof elapsed, el);
    if (p->total > 0 && rate > 0 && !final)
        dp_format_duration(eta, sizeof eta, (double)(p->total - p->done) / rate);
    else
        snprintf(eta, sizeof eta, final ? "done" : "--:--");
    if (p->total > 0)
        snprintf(figures, sizeof figures, "%lld/%lld %s (%.0f%%) %.1f %s/s, %s, ETA %s",
                 (long long)p->done, (long long)p->total, p->unit,
                 100.0 * (double)p->done / (double)p->total, rate, p->unit, elapsed, eta);
    else
        snprintf(figures, sizeof figures, "%lld %s %.1f %s/s, %s", (long long)p->done, p->unit,
                 rate, p->unit, elapsed);
    if (p->o.style == DP_PROGRESS_BAR) {
        char bar[31] = {0};
        int width = 30, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
        if (fill > width) fill = width;
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        fprintf(p->o.out, "\r\033[K%s %s[%s]%s %s%s%s%s", p->label, p->color ? "\033[36m" : "", bar,
                p->color ? "\033[0m" : "", figures, p->note[0] ? " " : "", p->note,
                final ? "\n" : "");
    } else {
        fprintf(p->o.out, "%s: %s%s%s\n", p->label, figures, p->note[0] ? " " : "", p->note);
    }
    fflush(p->o.out);
    p->last_draw = now;
}

void dp_progress_update(dp_progress *p, int64_t done) {
    if (!p) return;
    p->done = done;
    if (p->o.quiet) return;
    double now = p->o.clock();
    double interval = p->o.style == DP_PROGRESS_BAR ? 0.1 : p->o.plain_interval;
    if (now - p->last_draw >= interval && !(p->total > 0 && done >= p->total)) draw(p, false);
}

void dp_progress_note(dp_progress *p, const char *fmt, ...) {
    if (!p) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->note, sizeof p->note, fmt, ap);
    va_end(ap);
}

void dp_progress_finish(dp_progress *p) {
    if (!p) return;
    if (!p->o.quiet) draw(p, true);
    free(p);
}
