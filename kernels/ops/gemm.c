/* Matrix products: gemm and the Linear layer. */
#include "kernels/ops/dispatch.h"

void k_gemm(struct kctx *ctx, struct tensor c, struct tensor a, struct tensor b, int M, int N,
            int K, int trans_a, int trans_b, float alpha, float beta)
{
    const char *op = "gemm";
    op_check_ctx(ctx, op);
    DIMS("M, N, K", M, N, K);
    enum kdtype dt = op_act_dtype(ctx, op, "c", c);
    void *pc = OUT(c, (int64_t)M * N);
    void *pa = IN(a, (int64_t)M * K);
    void *pb = IN(b, (int64_t)K * N);
    ctx->ops->gemm(ctx, pc, pa, pb, dt, M, N, K, trans_a, trans_b, alpha, beta);
}

void k_linear_forward(struct kctx *ctx, struct tensor out, struct tensor inp,
                      struct tensor weight, struct tensor bias, int M, int C, int OC)
{
    const char *op = "linear_forward";
    op_check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)M * OC);
    void *pi = IN(inp, (int64_t)M * C);
    void *pw = IN(weight, (int64_t)OC * C);
    void *pb = op_check_tensor(ctx, op, "bias", bias, OC, OPTIONAL, EXACT, dt);
    ctx->ops->linear_forward(ctx, po, pi, pw, pb, dt, M, C, OC);
}

void k_linear_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor pre,
                           struct tensor inp, struct tensor weight, struct tensor bias, int M,
                           int C, int OC)
{
    const char *op = "linear_gelu_forward";
    op_check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)M * OC);
    void *pp = OUT(pre, (int64_t)M * OC);
    void *pi = IN(inp, (int64_t)M * C);
    void *pw = IN(weight, (int64_t)OC * C);
    void *pb = op_check_tensor(ctx, op, "bias", bias, OC, OPTIONAL, EXACT, dt);
    ctx->ops->linear_gelu_forward(ctx, po, pp, pi, pw, pb, dt, M, C, OC);
}

void k_linear_backward(struct kctx *ctx, struct tensor dinp, struct tensor dweight,
                       struct tensor dbias, struct tensor dout, struct tensor inp,
                       struct tensor weight, int M, int C, int OC)
{
    const char *op = "linear_backward";
    op_check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    enum kdtype dt = op_act_dtype(ctx, op, "dout", dout);
    void *pdi = GRAD(dinp, (int64_t)M * C);
    float *pdw = F32GRAD(dweight, (int64_t)OC * C);
    float *pdb = F32GRAD(dbias, OC);
    void *pdo = IN(dout, (int64_t)M * OC);
    void *pi = IN(inp, (int64_t)M * C);
    void *pw = IN(weight, (int64_t)OC * C);
    ctx->ops->linear_backward(ctx, pdi, pdw, pdb, pdo, pi, pw, dt, M, C, OC);
}
