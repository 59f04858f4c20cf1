/* Small HDF5 helpers shared by the token cache, checkpoints and metrics: 1-D datasets and
 * scalar attributes. Each returns 0 or -1; the caller names the file in its message. */
#ifndef DOPPEL_H5_H
#define DOPPEL_H5_H

#include <stdbool.h>
#include <stdint.h>

#include <hdf5.h>

/* A 1-D dataset of n elements (file type ftype, memory type mtype); deflate when compress. */
int dp_h5_write_1d(hid_t f, const char *name, hid_t ftype, hid_t mtype, const void *x, hsize_t n,
                   bool compress);
int dp_h5_write_attr_i64(hid_t obj, const char *name, int64_t v);
int dp_h5_write_attr_f64(hid_t obj, const char *name, double v);
int dp_h5_read_attr_i64(hid_t obj, const char *name, int64_t *v);
int dp_h5_read_attr_f64(hid_t obj, const char *name, double *v);

#endif
