// cuBLASLt, the one place that calls it.
//
// The library is opened with dlopen in lt_init, called from kctx_init for
// the CUDA device only, so a binary built with CUDA starts (and runs on the
// CPU) on a machine without the toolkit; there, asking for the CUDA device
// fails with the loader's message. The types and function-pointer types come
// from the real <cublasLt.h>; the version is checked against it.
//
// Row-major products through a column-major library: row-major D[M,N] is
// column-major D^T[N,M] with the same bytes, and D^T = op(B)^T op(A)^T, so
// cuBLASLt is asked for the product with the operands swapped (its A is our
// B, its B our A, m = N, n = M) and the same transpose flags (a row-major
// [r,c] matrix read as column-major is already its transpose). The bias
// vector is then indexed by cuBLASLt's rows, our columns, as wanted, and the
// GELU aux matrix has our row length N as its leading dimension. (The
// alternative, CUBLASLT_ORDER_ROW layouts, has far fewer kernels behind it.)
//
// What this relies on, from the cuBLASLt documentation (cuBLAS guide,
// "cublasLtMatmul()": the table of supported type combinations, and the
// attribute comments in cublasLt.h):
//  - computeType CUBLAS_COMPUTE_32F with scaleType CUDA_R_32F and
//    A/B/C/D = (32F,32F,32F,32F), (16BF,16BF,16BF,16BF), (16BF,16BF,32F,32F),
//    (16F,16F,16F,16F), (16F,16F,32F,32F): the mixed ones are the fp32
//    parameter gradients accumulated with beta = 1.
//  - CUBLAS_COMPUTE_32F with fp32 inputs is true fp32: cuBLASLt uses TF32
//    only when asked with CUBLAS_COMPUTE_32F_FAST_TF32 (and BF16x9 emulation
//    only on Blackwell with CUBLAS_COMPUTE_32F_EMULATED_16BFX9 or the
//    CUBLAS_EMULATE_SINGLE_PRECISION environment variable), so f32 results
//    match the CPU to rounding.
//  - CUBLASLT_EPILOGUE_BIAS / GELU / GELU_BIAS / GELU_AUX / GELU_AUX_BIAS:
//    bias of the type of D (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE), length the
//    rows of D; the aux matrix (the GELU input, x + bias) of the type of D by
//    default (EPILOGUE_AUX_DATA_TYPE unset), shaped like D, with EPILOGUE_AUX_LD
//    a multiple of 8 and at least D's rows (lt_epilogue_possible).
//    cuBLASLt's GELU is the tanh approximation, as ours.
//  - The heuristic assumes 256-byte aligned A/B/C/D unless told otherwise
//    (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES, default 256), and reads the
//    bias and aux pointers from the descriptor for their alignment: views
//    into arenas are often less aligned, so the true alignments are passed
//    and are part of the cache key.
//  - A heuristic that returns no algorithm (CUBLAS_STATUS_NOT_SUPPORTED, or a
//    count of 0) for an epilogue is answered with a plain product and the
//    epilogue in our kernels (matmul.cu): slower, never wrong.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt.h"

#include <cublasLt.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "libcommon/error.h"
}

// Hopper wants 32 MiB for its largest kernels (the cuBLAS guide's advice for
// cublasLt workspaces on sm_90).
static const size_t LT_WORKSPACE_BYTES = (size_t)32 << 20;

// Distinct products in a DiT step: a few per layer kind, times the
// alignments seen. Beyond this the oldest entry is rebuilt on demand.
enum { LT_PLANS = 64 };

// Everything that decides the algorithm; all ints, so memcmp compares it.
struct lt_key {
    int M, N, K, trans_a, trans_b, ab_dtype, d_dtype;
    unsigned epilogue;
    unsigned align_a, align_b, align_d, align_bias, align_aux;
};

struct lt_plan {
    int used;
    int supported; // 0: the heuristic had no algorithm (descriptors freed)
    struct lt_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld; // cuBLASLt's A (our B), B (our A), C = D
    cublasLtMatmulAlgo_t algo;
};

struct lt_state {
    void *lib;
    decltype(&cublasLtGetVersion) GetVersion;
    decltype(&cublasLtGetStatusString) GetStatusString;
    decltype(&cublasLtCreate) Create;
    decltype(&cublasLtDestroy) Destroy;
    decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
    decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
    decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
    decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
    decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
    decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
    decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
    decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
    decltype(&cublasLtMatmul) Matmul;
    cublasLtHandle_t handle;
    int no_epilogue; // DIT_LT_NO_EPILOGUE
    int next_evict;
    struct lt_plan plans[LT_PLANS];
};

static struct lt_state *lt_of(struct kctx *ctx)
{
    return (struct lt_state *)cuda_state_of(ctx)->lt;
}

static void lt_fail(const struct lt_state *lt, cublasStatus_t st, const char *call,
                    const char *file, int line)
{
    fprintf(stderr, "dit: cuBLASLt error %s (%d) at %s:%d: %s\n",
            lt->GetStatusString ? lt->GetStatusString(st) : "?", (int)st, file, line, call);
    abort();
}

#define LT_CHECK(lt, call)                                                                    \
    do {                                                                                      \
        cublasStatus_t st_ = (call);                                                          \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                     \
            lt_fail((lt), st_, #call, __FILE__, __LINE__);                                    \
    } while (0)

static cudaDataType_t lt_type(int dt)
{
    switch (dt) {
    case KDT_F32: return CUDA_R_32F;
    case KDT_BF16: return CUDA_R_16BF;
    case KDT_F16: return CUDA_R_16F;
    }
    fprintf(stderr, "dit: cuBLASLt: unknown dtype %d\n", dt);
    abort();
}

static const char *lt_type_name(int dt)
{
    return dt == KDT_F32 ? "f32" : dt == KDT_BF16 ? "bf16" : "f16";
}

// The largest power of two up to 256 that divides the address (256 for
// NULL): what the MIN_ALIGNMENT preferences ask for.
static unsigned lt_align(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    unsigned a = 256;
    while (a > 1 && (v & (a - 1)) != 0)
        a >>= 1;
    return a;
}

static uint32_t lt_epilogue_of(const struct lt_gemm *g)
{
    if (!g->gelu)
        return g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (g->aux)
        return g->bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    return g->bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
}

// ---- loading ----------------------------------------------------------------

static const char *const LT_LIBS[] = {"libcublasLt.so.13", "libcublasLt.so"};

static int lt_load(struct lt_state *lt)
{
    char first_err[512] = "";
    for (size_t i = 0; i < sizeof LT_LIBS / sizeof LT_LIBS[0] && !lt->lib; i++) {
        lt->lib = dlopen(LT_LIBS[i], RTLD_NOW | RTLD_LOCAL);
        if (!lt->lib && i == 0) {
            const char *e = dlerror();
            snprintf(first_err, sizeof first_err, "%s", e ? e : LT_LIBS[0]);
        }
    }
    if (!lt->lib) {
        err_set("CUDA backend: cannot load cuBLASLt (%s, from the CUDA %d toolkit): %s",
                LT_LIBS[0], CUBLAS_VER_MAJOR, first_err);
        return -1;
    }
#define LT_SYM(field, name)                                                                   \
    do {                                                                                      \
        lt->field = reinterpret_cast<decltype(&name)>(dlsym(lt->lib, #name));                 \
        if (!lt->field) {                                                                     \
            const char *e_ = dlerror();                                                       \
            err_set("CUDA backend: cuBLASLt has no %s: %s", #name, e_ ? e_ : "not found");    \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
    LT_SYM(GetVersion, cublasLtGetVersion);
    LT_SYM(GetStatusString, cublasLtGetStatusString);
    LT_SYM(Create, cublasLtCreate);
    LT_SYM(Destroy, cublasLtDestroy);
    LT_SYM(MatmulDescCreate, cublasLtMatmulDescCreate);
    LT_SYM(MatmulDescDestroy, cublasLtMatmulDescDestroy);
    LT_SYM(MatmulDescSetAttribute, cublasLtMatmulDescSetAttribute);
    LT_SYM(MatrixLayoutCreate, cublasLtMatrixLayoutCreate);
    LT_SYM(MatrixLayoutDestroy, cublasLtMatrixLayoutDestroy);
    LT_SYM(MatmulPreferenceCreate, cublasLtMatmulPreferenceCreate);
    LT_SYM(MatmulPreferenceDestroy, cublasLtMatmulPreferenceDestroy);
    LT_SYM(MatmulPreferenceSetAttribute, cublasLtMatmulPreferenceSetAttribute);
    LT_SYM(MatmulAlgoGetHeuristic, cublasLtMatmulAlgoGetHeuristic);
    LT_SYM(Matmul, cublasLtMatmul);
#undef LT_SYM
    // Enum values and struct layouts are those of the header we built
    // with: an unversioned libcublasLt.so of another major version would
    // take our descriptors to mean something else.
    size_t version = lt->GetVersion();
    if (version / 10000 != CUBLAS_VER_MAJOR) {
        err_set("CUDA backend: the cuBLASLt found is version %zu.%zu, this build needs %d.x",
                version / 10000, version / 100 % 100, CUBLAS_VER_MAJOR);
        return -1;
    }
    return 0;
}

int lt_init(struct kctx *ctx)
{
    struct cuda_state *s = cuda_state_of(ctx);
    struct lt_state *lt = (struct lt_state *)calloc(1, sizeof *lt);
    if (!lt) {
        err_set("CUDA backend: out of host memory");
        return -1;
    }
    // Never dlclosed: the loader keeps one copy however many contexts open
    // it, and unloading a CUDA library under a live CUDA context is nothing
    // NVIDIA supports.
    if (lt_load(lt) != 0) {
        free(lt);
        return -1;
    }
    cublasStatus_t st = lt->Create(&lt->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        err_set("CUDA backend: cublasLtCreate: %s", lt->GetStatusString(st));
        free(lt);
        return -1;
    }
    if (cuda_mem_alloc(ctx, &s->lt_workspace, LT_WORKSPACE_BYTES) != 0) {
        err_prefix("cuBLASLt workspace");
        lt->Destroy(lt->handle);
        free(lt);
        return -1;
    }
    s->lt_workspace_bytes = LT_WORKSPACE_BYTES;
    const char *no_epi = getenv("DIT_LT_NO_EPILOGUE");
    lt->no_epilogue = no_epi && *no_epi && strcmp(no_epi, "0") != 0;
    s->lt = lt;
    return 0;
}

// Destroying only frees host memory; teardown after a device error must not
// abort, so the statuses are not checked.
static void lt_plan_release(struct lt_state *lt, struct lt_plan *p)
{
    if (p->desc)
        lt->MatmulDescDestroy(p->desc);
    if (p->la)
        lt->MatrixLayoutDestroy(p->la);
    if (p->lb)
        lt->MatrixLayoutDestroy(p->lb);
    if (p->ld)
        lt->MatrixLayoutDestroy(p->ld);
    memset(p, 0, sizeof *p);
}

void lt_free(struct kctx *ctx)
{
    struct cuda_state *s = cuda_state_of(ctx);
    if (!s || !s->lt)
        return;
    struct lt_state *lt = (struct lt_state *)s->lt;
    for (int i = 0; i < LT_PLANS; i++)
        lt_plan_release(lt, &lt->plans[i]);
    // Waits for the stream: queued products still use the workspace.
    cuda_mem_free(ctx, s->lt_workspace, s->lt_workspace_bytes);
    s->lt_workspace = NULL;
    s->lt_workspace_bytes = 0;
    lt->Destroy(lt->handle);
    free(lt);
    s->lt = NULL;
}

// ---- plans --------------------------------------------------------------------

static void lt_desc_set(struct lt_state *lt, cublasLtMatmulDesc_t desc,
                        cublasLtMatmulDescAttributes_t attr, const void *value, size_t size)
{
    LT_CHECK(lt, lt->MatmulDescSetAttribute(desc, attr, value, size));
}

static void lt_pref_set(struct lt_state *lt, cublasLtMatmulPreference_t pref,
                        cublasLtMatmulPreferenceAttributes_t attr, const void *value,
                        size_t size)
{
    LT_CHECK(lt, lt->MatmulPreferenceSetAttribute(pref, attr, value, size));
}

// The bias and aux pointers live in the descriptor: set on every call.
static void lt_set_pointers(struct lt_state *lt, struct lt_plan *p, const struct lt_gemm *g)
{
    if (g->bias)
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias);
    if (g->aux)
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g->aux,
                    sizeof g->aux);
}

// Descriptors and the heuristic's first choice for p->key.
static void lt_plan_build(struct lt_state *lt, struct lt_plan *p, const struct lt_gemm *g,
                          size_t workspace_bytes)
{
    const struct lt_key *k = &p->key;
    LT_CHECK(lt, lt->MatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // Swapped operands: cuBLASLt's A is our B, so its transa is our trans_b.
    int32_t transa = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int32_t transb = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa);
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb);
    uint32_t epilogue = k->epilogue;
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
    if (g->bias) {
        int32_t bias_type = lt_type(g->d_dtype);
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                    sizeof bias_type);
    }
    if (g->aux) {
        int64_t aux_ld = g->N;
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld);
    }
    lt_set_pointers(lt, p, g);

    // Stored shapes in column-major terms (rows, cols, leading dimension):
    // row-major [r,c] is column-major [c,r] with ld c.
    cudaDataType_t ab = lt_type(g->ab_dtype), dt = lt_type(g->d_dtype);
    const uint64_t M = (uint64_t)g->M, N = (uint64_t)g->N, K = (uint64_t)g->K;
    if (g->trans_b) // our B stored [N,K]
        LT_CHECK(lt, lt->MatrixLayoutCreate(&p->la, ab, K, N, (int64_t)K));
    else // our B stored [K,N]
        LT_CHECK(lt, lt->MatrixLayoutCreate(&p->la, ab, N, K, (int64_t)N));
    if (g->trans_a) // our A stored [K,M]
        LT_CHECK(lt, lt->MatrixLayoutCreate(&p->lb, ab, M, K, (int64_t)M));
    else // our A stored [M,K]
        LT_CHECK(lt, lt->MatrixLayoutCreate(&p->lb, ab, K, M, (int64_t)K));
    LT_CHECK(lt, lt->MatrixLayoutCreate(&p->ld, dt, N, M, (int64_t)N));

    cublasLtMatmulPreference_t pref;
    LT_CHECK(lt, lt->MatmulPreferenceCreate(&pref));
    uint64_t ws = workspace_bytes;
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    uint32_t align_a = k->align_b, align_b = k->align_a, align_d = k->align_d;
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof align_a);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof align_b);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof align_d);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof align_d);

    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int found = 0;
    cublasStatus_t st = lt->MatmulAlgoGetHeuristic(lt->handle, p->desc, p->la, p->lb, p->ld,
                                                   p->ld, pref, 1, &res, &found);
    LT_CHECK(lt, lt->MatmulPreferenceDestroy(pref));
    if (st == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
        p->algo = res.algo;
        p->supported = 1;
        return;
    }
    // An epilogue the library cannot do for these types is ours to do; a
    // rejected attribute combination reads as INVALID_VALUE here too.
    if (k->epilogue != CUBLASLT_EPILOGUE_DEFAULT &&
        (st == CUBLAS_STATUS_SUCCESS || st == CUBLAS_STATUS_NOT_SUPPORTED ||
         st == CUBLAS_STATUS_INVALID_VALUE)) {
        struct lt_key keep = *k;
        lt_plan_release(lt, p);
        p->key = keep;
        p->used = 1;
        p->supported = 0;
        return;
    }
    fprintf(stderr,
            "dit: cuBLASLt has no algorithm for the product [%d,%d] = [%d,%d]%s x [%d,%d]%s "
            "(%s inputs, %s output, alignments %u/%u/%u): %s\n",
            g->M, g->N, g->trans_a ? g->K : g->M, g->trans_a ? g->M : g->K,
            g->trans_a ? "^T" : "", g->trans_b ? g->N : g->K, g->trans_b ? g->K : g->N,
            g->trans_b ? "^T" : "", lt_type_name(g->ab_dtype), lt_type_name(g->d_dtype),
            k->align_a, k->align_b, k->align_d,
            st == CUBLAS_STATUS_SUCCESS ? "no result" : lt->GetStatusString(st));
    abort();
}

static struct lt_plan *lt_plan_get(struct lt_state *lt, const struct lt_gemm *g,
                                   size_t workspace_bytes)
{
    struct lt_key key;
    memset(&key, 0, sizeof key);
    key.M = g->M;
    key.N = g->N;
    key.K = g->K;
    key.trans_a = !!g->trans_a;
    key.trans_b = !!g->trans_b;
    key.ab_dtype = g->ab_dtype;
    key.d_dtype = g->d_dtype;
    key.epilogue = lt_epilogue_of(g);
    key.align_a = lt_align(g->a);
    key.align_b = lt_align(g->b);
    key.align_d = lt_align(g->d);
    key.align_bias = g->bias ? lt_align(g->bias) : 0;
    key.align_aux = g->aux ? lt_align(g->aux) : 0;
    for (int i = 0; i < LT_PLANS; i++)
        if (lt->plans[i].used && memcmp(&lt->plans[i].key, &key, sizeof key) == 0)
            return &lt->plans[i];
    struct lt_plan *p = NULL;
    for (int i = 0; i < LT_PLANS && !p; i++)
        if (!lt->plans[i].used)
            p = &lt->plans[i];
    if (!p) {
        p = &lt->plans[lt->next_evict];
        lt->next_evict = (lt->next_evict + 1) % LT_PLANS;
        lt_plan_release(lt, p);
    }
    p->key = key;
    p->used = 1;
    lt_plan_build(lt, p, g, workspace_bytes);
    return p;
}

// ---- the product ----------------------------------------------------------------

int lt_matmul(struct kctx *ctx, const struct lt_gemm *g)
{
    struct cuda_state *s = cuda_state_of(ctx);
    struct lt_state *lt = lt_of(ctx);
    const int has_epilogue = lt_check_call(g);
    if (has_epilogue && (lt->no_epilogue || !lt_epilogue_possible(g)))
        return 1;
    struct lt_plan *p = lt_plan_get(lt, g, s->lt_workspace_bytes);
    if (!p->supported)
        return 1;
    lt_set_pointers(lt, p, g);
    // cuBLASLt's A is our B and its B our A; C and D are both D, in place.
    LT_CHECK(lt, lt->Matmul(lt->handle, p->desc, &g->alpha, g->b, p->la, g->a, p->lb, &g->beta,
                            g->d, p->ld, g->d, p->ld, &p->algo, s->lt_workspace,
                            s->lt_workspace_bytes, cuda_stream_of(ctx)));
    return 0;
}
