/* HDF5 checkpoints (see checkpoint.h). Layout: datasets /lora, /adam_m, /adam_v (float32, n),
 * /config (string), root attributes for the state and format_version. */
#include "train/checkpoint.h"
#include "data/base/error.h"
#include "train/h5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CKPT_FORMAT 1

static int fsync_path(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int dp_checkpoint_save(const char *path, const dp_lora *lora, const float *m, const float *v,
                       const dp_train_state *st, const char *config_json) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return dp_fail("%s: path too long", path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return dp_fail("%s: cannot create the checkpoint (is the directory writable?)", tmp);
    int rc =
        dp_h5_write_1d(f, "lora", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, lora->params, lora->n, false);
    rc |= dp_h5_write_1d(f, "adam_m", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, m, lora->n, false);
    rc |= dp_h5_write_1d(f, "adam_v", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v, lora->n, false);
    /* the run config as one fixed-length string */
    const char *cfg = config_json ? config_json : "{}";
    hid_t st_t = H5Tcopy(H5T_C_S1);
    H5Tset_size(st_t, strlen(cfg) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(f, "config", st_t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    rc |= d < 0 || H5Dwrite(d, st_t, H5S_ALL, H5S_ALL, H5P_DEFAULT, cfg) < 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(st_t);
    rc |= dp_h5_write_attr_i64(f, "format_version", CKPT_FORMAT);
    rc |= dp_h5_write_attr_i64(f, "n_params", (int64_t)lora->n);
    rc |= dp_h5_write_attr_i64(f, "r", lora->cfg.r);
    rc |= dp_h5_write_attr_i64(f, "step", st->step);
    rc |= dp_h5_write_attr_i64(f, "seed", (int64_t)st->seed);
    rc |= dp_h5_write_attr_i64(f, "epoch", st->epoch);
    rc |= dp_h5_write_attr_i64(f, "cursor", st->cursor);
    rc |= dp_h5_write_attr_f64(f, "best_val", st->best_val);
    rc |= dp_h5_write_attr_i64(f, "best_step", st->best_step);
    rc |= dp_h5_write_attr_i64(f, "evals_since_best", st->evals_since_best);
    rc |= dp_h5_write_attr_i64(f, "tokens_seen", st->tokens_seen);
    rc |= dp_h5_write_attr_f64(f, "elapsed", st->elapsed);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc) {
        unlink(tmp);
        return dp_fail("%s: writing the checkpoint failed (disk full?)", tmp);
    }
    if (fsync_path(tmp, O_RDONLY)) {
        unlink(tmp);
        return dp_fail("%s: fsync failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return dp_fail("%s: cannot rename the new checkpoint into place: %s", path, strerror(e));
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY); /* make the rename durable */
    return 0;
}

static hid_t open_ckpt(const char *path) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(path, R_OK)) {
        dp_fail("%s: no checkpoint here (%s)", path, strerror(errno));
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) dp_fail("%s: not a readable HDF5 checkpoint (damaged or not a doppel file)", path);
    return f;
}

static int read_attr_i64(hid_t f, const char *path, const char *name, int64_t *v) {
    return dp_h5_read_attr_i64(f, name, v)
               ? dp_fail("%s: checkpoint attribute '%s' missing or unreadable", path, name)
               : 0;
}

static int read_attr_f64(hid_t f, const char *path, const char *name, double *v) {
    return dp_h5_read_attr_f64(f, name, v)
               ? dp_fail("%s: checkpoint attribute '%s' missing or unreadable", path, name)
               : 0;
}

int dp_checkpoint_read_config(const char *path, char **config_json) {
    *config_json = NULL;
    hid_t f = open_ckpt(path);
    if (f < 0) return -1;
    int rc = -1;
    hid_t d = H5Dopen2(f, "config", H5P_DEFAULT);
    hid_t t = d >= 0 ? H5Dget_type(d) : -1;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t)) {
        size_t len = H5Tget_size(t);
        if (len > 0 && len < (1u << 24)) {
            char *s = dp_malloc(len + 1);
            if (s && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0) {
                s[len] = 0;
                *config_json = s;
                rc = 0;
            } else
                free(s);
        }
    }
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    if (rc) dp_fail("%s: checkpoint has no readable run configuration", path);
    return rc;
}

static int read_floats(hid_t f, const char *path, const char *name, float *x, size_t n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return dp_fail("%s: checkpoint dataset '%s' is missing", path, name);
    hid_t sp = H5Dget_space(d);
    hssize_t got = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (got != (hssize_t)n) {
        H5Dclose(d);
        return dp_fail("%s: checkpoint dataset '%s' holds %lld values, this run needs %zu "
                       "(different rank, targets or model?)",
                       path, name, (long long)got, n);
    }
    herr_t rc = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Dclose(d);
    if (rc < 0) return dp_fail("%s: checkpoint dataset '%s' is unreadable", path, name);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return dp_fail("%s: checkpoint dataset '%s' holds a non-finite value at %zu", path,
                           name, i);
    return 0;
}

int dp_checkpoint_load(const char *path, dp_lora *lora, float *m, float *v, dp_train_state *st) {
    hid_t f = open_ckpt(path);
    if (f < 0) return -1;
    int64_t fmt = 0, n = 0, r = 0, seed = 0;
    int rc = read_attr_i64(f, path, "format_version", &fmt);
    if (!rc && fmt != CKPT_FORMAT)
        rc = dp_fail("%s: checkpoint format %lld, this doppel reads format %d", path,
                     (long long)fmt, CKPT_FORMAT);
    if (!rc) rc = read_attr_i64(f, path, "n_params", &n);
    if (!rc) rc = read_attr_i64(f, path, "r", &r);
    if (!rc && (n != (int64_t)lora->n || r != lora->cfg.r))
        rc = dp_fail("%s: checkpoint has %lld LoRA values of rank %lld, this run %zu of rank %d",
                     path, (long long)n, (long long)r, lora->n, lora->cfg.r);
    if (!rc) rc = read_floats(f, path, "lora", lora->params, lora->n);
    if (!rc) rc = read_floats(f, path, "adam_m", m, lora->n);
    if (!rc) rc = read_floats(f, path, "adam_v", v, lora->n);
    if (!rc) rc = read_attr_i64(f, path, "step", &st->step);
    if (!rc) rc = read_attr_i64(f, path, "seed", &seed);
    st->seed = (uint64_t)seed;
    if (!rc) rc = read_attr_i64(f, path, "epoch", &st->epoch);
    if (!rc) rc = read_attr_i64(f, path, "cursor", &st->cursor);
    if (!rc) rc = read_attr_f64(f, path, "best_val", &st->best_val);
    if (!rc) rc = read_attr_i64(f, path, "best_step", &st->best_step);
    if (!rc) rc = read_attr_i64(f, path, "evals_since_best", &st->evals_since_best);
    if (!rc) rc = read_attr_i64(f, path, "tokens_seen", &st->tokens_seen);
    if (!rc) rc = read_attr_f64(f, path, "elapsed", &st->elapsed);
    if (!rc && (st->step < 0 || st->epoch < 0 || st->cursor < 0))
        rc = dp_fail("%s: checkpoint step/epoch/cursor is negative", path);
    H5Fclose(f);
    return rc;
}
