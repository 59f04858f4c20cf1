/* 1-D datasets and scalar attributes over the HDF5 C API (see h5.h). */
#include "train/h5.h"

int dp_h5_write_1d(hid_t f, const char *name, hid_t ftype, hid_t mtype, const void *x, hsize_t n,
                   bool compress) {
    hsize_t dims[1] = {n}, chunk[1] = {n < 65536 ? (n ? n : 1) : 65536};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    if (compress) {
        H5Pset_chunk(pl, 1, chunk);
        H5Pset_deflate(pl, 4);
    }
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    if (d >= 0) H5Dclose(d);
    H5Pclose(pl);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int write_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int read_attr(hid_t obj, const char *name, hid_t mtype, void *v) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Aread(a, mtype, v);
    if (a >= 0) H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

int dp_h5_write_attr_i64(hid_t obj, const char *name, int64_t v) {
    return write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
int dp_h5_write_attr_f64(hid_t obj, const char *name, double v) {
    return write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
int dp_h5_read_attr_i64(hid_t obj, const char *name, int64_t *v) {
    return read_attr(obj, name, H5T_NATIVE_INT64, v);
}
int dp_h5_read_attr_f64(hid_t obj, const char *name, double *v) {
    return read_attr(obj, name, H5T_NATIVE_DOUBLE, v);
}
