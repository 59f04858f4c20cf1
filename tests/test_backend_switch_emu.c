/* The *_emu suites' backend switch (tests/fixture_emu.h): DOPPEL_TEST_BACKEND unset or "emu"
 * picks the EMU table, "cuda" the real device's table only when a device is there (a GPU check
 * that silently ran under EMU would report a GPU result that never happened), anything else is
 * refused with the choices; DOPPEL_TEST_SOURCE_DIR moves the fixtures. tests/gpu/check.sh runs
 * every switched suite with the variable set (ctest gpu_check_emu: under EMU). */
#include "check.h"
#include "fixture_emu.h"
#include "data/base/error.h"
#include "kernels/cuda/kernels.h"
#include "kernels/device.h"

#include <stdlib.h>
#include <string.h>

static const dp_gpu_ops *pick(const char *value) {
    if (value)
        setenv("DOPPEL_TEST_BACKEND", value, 1);
    else
        unsetenv("DOPPEL_TEST_BACKEND");
    dp_clear_error();
    return test_gpu_backend();
}

int main(void) {
    const dp_gpu_ops *g = pick(NULL);
    CHECK(g == &dp_emu_ops);
    CHECK(g && test_gpu_counts_bytes(g));
    CHECK_EQ_STR("emu", g ? g->backend : NULL);
    CHECK(pick("emu") == &dp_emu_ops);
    CHECK(pick("") == &dp_emu_ops);

    fprintf(stderr, "  (the FAIL lines that follow are the refusals this suite expects)\n");
    CHECK(pick("gpu") == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "DOPPEL_TEST_BACKEND=gpu") &&
                     strstr(dp_last_error(), "choose emu"),
                 "unexpected message: %s", dp_last_error());
    CHECK(pick("EMU") == NULL); /* names are exact, as --device's are */

    g = pick("cuda");
    dp_cuda_info info;
    dp_cuda_query(&info);
    fprintf(stderr, "  cuda: %d device(s) (%s); the switch gave %s%s%s\n", info.device_count,
            info.device_count ? info.name : info.status, g ? g->backend : "nothing", g ? "" : ": ",
            g ? "" : dp_last_error());
#ifdef DOPPEL_HAVE_CUDA
    if (info.device_count > 0) {
        CHECK(g == &dp_cuda_ops);
        CHECK_EQ_STR("cuda", g ? g->backend : NULL);
        CHECK(g && !test_gpu_counts_bytes(g));
    } else {
        CHECK(g == NULL);
        CHECK(strstr(dp_last_error(), "DOPPEL_TEST_BACKEND=cuda") != NULL);
        CHECK(strstr(dp_last_error(), info.status) != NULL); /* the runtime's own reason */
    }
#else
    CHECK(g == NULL);
    CHECK_REPORT(strstr(dp_last_error(), "built without the CUDA backend") != NULL,
                 "unexpected message: %s", dp_last_error());
#endif

    /* a failed pick through the suites' entry point is one failed check, never a pass */
    pick("gpu");
    int before = check_failures;
    CHECK(test_gpu_backend_or_fail() == NULL);
    CHECK_EQ_INT(before + 1, check_failures);
    check_failures = before; /* that failure was the point */
    unsetenv("DOPPEL_TEST_BACKEND");

    unsetenv("DOPPEL_TEST_SOURCE_DIR");
    CHECK_EQ_STR(DOPPEL_SOURCE_DIR, test_source_dir());
    setenv("DOPPEL_TEST_SOURCE_DIR", "/elsewhere/doppel", 1);
    CHECK_EQ_STR("/elsewhere/doppel", test_source_dir());
    dp_model *m = emu_tiny_model("tiny-qwen2", false); /* no fixtures there: a failed check */
    CHECK(m == NULL);
    CHECK(strstr(dp_last_error(), "/elsewhere/doppel/tests/fixtures/tiny-qwen2") != NULL);
    check_failures--; /* emu_tiny_model reported that expected failure */
    unsetenv("DOPPEL_TEST_SOURCE_DIR");
    m = emu_tiny_model("tiny-qwen2", false);
    CHECK(m != NULL);
    dp_model_free(m);
    return check_done();
}
