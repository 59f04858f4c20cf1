/* HDF5 metrics file (see metrics.h): chunked, unlimited 1-D datasets grown one row at a time. */
#include "train/metrics.h"
#include "data/base/error.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

enum { M_STEP, M_LOSS, M_VAL, M_LR, M_NORM, M_TPS, M_ELAPSED, M_N };
static const char *const names[M_N] = {"step",      "loss",         "val_loss", "lr",
                                       "grad_norm", "tokens_per_s", "elapsed"};

enum { S_STEP, S_CONTEXT, S_TEXT, S_N };
static const char *const sample_names[S_N] = {"sample_step", "sample_context", "sample_text"};

struct dp_metrics {
    hid_t file;
    hid_t ds[M_N];
    hid_t sds[S_N]; /* the samples' datasets */
    hid_t str_type; /* variable-length UTF-8 string */
    int64_t sample_rows;
    int64_t rows;
    char *path;
};

void dp_metrics_close(dp_metrics *mt) {
    if (!mt) return;
    for (int i = 0; i < M_N; i++)
        if (mt->ds[i] > 0) H5Dclose(mt->ds[i]);
    for (int i = 0; i < S_N; i++)
        if (mt->sds[i] > 0) H5Dclose(mt->sds[i]);
    if (mt->str_type > 0) H5Tclose(mt->str_type);
    if (mt->file > 0) H5Fclose(mt->file);
    free(mt->path);
    free(mt);
}

static hid_t create_ds(hid_t f, const char *name, hid_t type) {
    hsize_t dims[1] = {0}, maxd[1] = {H5S_UNLIMITED}, chunk[1] = {256};
    hid_t sp = H5Screate_simple(1, dims, maxd);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 1, chunk);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return d;
}

static hid_t sample_type(dp_metrics *mt, int i) {
    return i == S_STEP ? H5T_STD_I64LE : i == S_CONTEXT ? H5T_STD_I32LE : mt->str_type;
}

/* The samples' datasets, opened or (fresh files, and files from before samples existed)
 * created; on resume the rows after keep_until_step are dropped. */
static int open_samples(dp_metrics *mt, int64_t keep_until_step) {
    mt->str_type = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt->str_type, H5T_VARIABLE);
    H5Tset_cset(mt->str_type, H5T_CSET_UTF8);
    for (int i = 0; i < S_N; i++) {
        mt->sds[i] = H5Lexists(mt->file, sample_names[i], H5P_DEFAULT) > 0
                         ? H5Dopen2(mt->file, sample_names[i], H5P_DEFAULT)
                         : create_ds(mt->file, sample_names[i], sample_type(mt, i));
        if (mt->sds[i] < 0)
            return dp_fail("%s: cannot open or create dataset %s", mt->path, sample_names[i]);
    }
    hid_t sp = H5Dget_space(mt->sds[S_STEP]);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n <= 0) return 0;
    int64_t *steps = dp_malloc(sizeof(int64_t) * (size_t)n);
    if (!steps) return -1;
    if (H5Dread(mt->sds[S_STEP], H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps) < 0) {
        free(steps);
        return dp_fail("%s: metrics dataset sample_step is unreadable", mt->path);
    }
    int64_t keep = 0;
    while (keep < n && (keep_until_step < 0 || steps[keep] <= keep_until_step)) keep++;
    free(steps);
    if (keep_until_step < 0) keep = 0;
    hsize_t dims[1] = {(hsize_t)keep};
    for (int i = 0; i < S_N; i++) H5Dset_extent(mt->sds[i], dims);
    mt->sample_rows = keep;
    return 0;
}

dp_metrics *dp_metrics_open(const char *path, int64_t keep_until_step) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    dp_metrics *mt = dp_calloc(1, sizeof *mt);
    if (!mt) return NULL;
    mt->path = dp_strdup(path);
    bool fresh = keep_until_step < 0 || access(path, F_OK) != 0;
    if (fresh) {
        mt->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (mt->file < 0) {
            dp_fail("%s: cannot create the metrics file", path);
            goto fail;
        }
        for (int i = 0; i < M_N; i++) {
            mt->ds[i] = create_ds(mt->file, names[i], i == M_STEP ? H5T_STD_I64LE : H5T_IEEE_F64LE);
            if (mt->ds[i] < 0) {
                dp_fail("%s: cannot create dataset %s", path, names[i]);
                goto fail;
            }
        }
        if (open_samples(mt, -1)) goto fail;
        return mt;
    }
    mt->file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (mt->file < 0) {
        dp_fail("%s: cannot open the metrics file to append (damaged? delete it to start a new "
                "one)",
                path);
        goto fail;
    }
    for (int i = 0; i < M_N; i++) {
        mt->ds[i] = H5Dopen2(mt->file, names[i], H5P_DEFAULT);
        if (mt->ds[i] < 0) {
            dp_fail("%s: metrics dataset %s is missing", path, names[i]);
            goto fail;
        }
    }
    hid_t sp = H5Dget_space(mt->ds[M_STEP]);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    int64_t *steps = dp_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!steps) goto fail;
    if (n > 0 &&
        H5Dread(mt->ds[M_STEP], H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps) < 0) {
        free(steps);
        dp_fail("%s: metrics dataset step is unreadable", path);
        goto fail;
    }
    int64_t keep = 0;
    while (keep < n && steps[keep] <= keep_until_step) keep++;
    free(steps);
    hsize_t dims[1] = {(hsize_t)keep};
    for (int i = 0; i < M_N; i++) H5Dset_extent(mt->ds[i], dims);
    mt->rows = keep;
    if (open_samples(mt, keep_until_step)) goto fail;
    return mt;
fail:
    dp_metrics_close(mt);
    return NULL;
}

static int append1(hid_t d, hid_t memtype, const void *v, int64_t row) {
    hsize_t dims[1] = {(hsize_t)row + 1}, start[1] = {(hsize_t)row}, one[1] = {1};
    if (H5Dset_extent(d, dims) < 0) return -1;
    hid_t fs = H5Dget_space(d);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, one, NULL);
    hid_t ms = H5Screate_simple(1, one, NULL);
    herr_t rc = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, v);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

int dp_metrics_append(dp_metrics *mt, const dp_metrics_row *r) {
    const double vals[M_N] = {0,         r->loss, r->val_loss, r->lr, r->grad_norm, r->tokens_per_s,
                              r->elapsed};
    int rc = append1(mt->ds[M_STEP], H5T_NATIVE_INT64, &r->step, mt->rows);
    for (int i = 1; i < M_N; i++) rc |= append1(mt->ds[i], H5T_NATIVE_DOUBLE, &vals[i], mt->rows);
    if (rc) return dp_fail("%s: cannot append a metrics row (disk full?)", mt->path);
    mt->rows++;
    H5Fflush(mt->file, H5F_SCOPE_LOCAL);
    return 0;
}

int dp_metrics_append_samples(dp_metrics *mt, int64_t step, char *const *texts, int n) {
    int rc = 0;
    for (int i = 0; i < n; i++) {
        int32_t ctx = i;
        const char *text = texts[i] ? texts[i] : "";
        rc |= append1(mt->sds[S_STEP], H5T_NATIVE_INT64, &step, mt->sample_rows);
        rc |= append1(mt->sds[S_CONTEXT], H5T_NATIVE_INT32, &ctx, mt->sample_rows);
        rc |= append1(mt->sds[S_TEXT], mt->str_type, &text, mt->sample_rows);
        if (rc) return dp_fail("%s: cannot append a sampled reply (disk full?)", mt->path);
        mt->sample_rows++;
    }
    H5Fflush(mt->file, H5F_SCOPE_LOCAL);
    return 0;
}

int64_t dp_metrics_rows(const dp_metrics *mt) {
    return mt->rows;
}
