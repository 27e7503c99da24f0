/* The CUDA ops where a closed form says more than the CPU's values: GELU
 * and SiLU at large |x| (the limits 0 and x, no NaN from an overflowing
 * exp), and the MSE of nothing. Every op's parity with the CPU backend is
 * the table's (tests/cuda/test_cuda_parity.c, one spec per op of
 * kernels/ops.def). */
#include "tests/cuda/cuda_test_util.h"

#include <stdlib.h>

TEST(gelu_silu_saturation)
{
    struct kctx gpu = cuda_test_ctx();
    float x[8] = {-200.0f, -90.0f, -20.0f, -0.0f, 0.0f, 20.0f, 90.0f, 200.0f};
    struct tensor t = test_tensor(&gpu, KDT_F32, x, 8), o = test_tensor(&gpu, KDT_F32, NULL, 8);
    k_gelu_forward(&gpu, o, t, 8);
    float *g = test_values(&gpu, o);
    k_silu_forward(&gpu, o, t, 8);
    float *s = test_values(&gpu, o);
    for (int i = 0; i < 8; i++) {
        float want = x[i] > 0 ? x[i] : 0.0f;
        CHECK_NEAR(g[i], want, 1e-4 * fabs(x[i]) + 1e-30);
        CHECK_NEAR(s[i], want, 1e-4 * fabs(x[i]) + 1e-30);
    }
    free(g);
    free(s);
    k_free(&gpu, &t);
    k_free(&gpu, &o);
    kctx_free(&gpu);
}

TEST(mse_empty)
{
    struct kctx gpu = cuda_test_ctx();
    float r = k_mse_forward_backward(&gpu, tensor_none(), tensor_none(), tensor_none(), 0, 1.0f);
    CHECK(r == 0.0f);
    kctx_free(&gpu);
}
