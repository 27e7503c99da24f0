// cuBLASLt, the one place that calls it.
//
// The library is opened with dlopen in lt_init, called from kctx_init for
// the CUDA device only, so a binary built with CUDA starts (and runs on the
// CPU) on a machine without the toolkit; there, asking for the CUDA device
// fails with the loader's message. The types and function-pointer types come
// from the real <cublasLt.h>; the version is checked against it.
//
// What each product asks of cuBLASLt is lt_call_of() in lt.h (the operand
// swap that turns our row-major products into its column-major ones, the
// layouts, the epilogue, the preferences); this file turns that description
// into descriptors, one field to one attribute, and nothing else, so that
// the emulator (tests/cuda_emu/lt_emu.cc), which checks and computes the
// same description, checks this file's requests too. The cuBLASLt rules
// relied on, each with the page it comes from, are listed in
// kernels/cuda/README.md, section "cuBLASLt".
//
// Plans (descriptors and the heuristic's first choice) are cached per
// shape, dtypes, transposes, epilogue and the alignment of every pointer,
// the bias and aux ones included: the heuristic picks an algorithm for the
// alignments it is told (MIN_ALIGNMENT_*_BYTES, and the bias and aux
// pointers it reads from the descriptor), so a plan is reused only for
// pointers aligned exactly as those it was made for.
//
// No algorithm: a heuristic that returns none for an epilogue is answered
// with a plain product and the epilogue in our kernels (matmul.cu): slower,
// never wrong; with DIT_LT_STRICT set it aborts instead, naming the product
// and the status. For a plain product it is a broken install or a bug:
// printed, then abort().
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
    int strict;      // DIT_LT_STRICT
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

// Set, and not "0".
static int lt_env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
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
    lt->no_epilogue = lt_env_flag("DIT_LT_NO_EPILOGUE");
    lt->strict = lt_env_flag("DIT_LT_STRICT");
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
static void lt_set_pointers(struct lt_state *lt, struct lt_plan *p, const struct lt_call *c)
{
    if (c->bias)
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c->bias, sizeof c->bias);
    if (c->aux)
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &c->aux,
                    sizeof c->aux);
}

static void lt_layout_create(struct lt_state *lt, cublasLtMatrixLayout_t *out,
                             const struct lt_layout *l)
{
    LT_CHECK(lt, lt->MatrixLayoutCreate(out, l->type, l->rows, l->cols, l->ld));
}

// Descriptors and the heuristic's first choice for p->key, from
// lt_call_of(g): every field of the call becomes its attribute here.
static void lt_plan_build(struct lt_state *lt, struct lt_plan *p, const struct lt_gemm *g,
                          size_t workspace_bytes)
{
    const struct lt_key *k = &p->key;
    const struct lt_call c = lt_call_of(g);
    LT_CHECK(lt, lt->MatmulDescCreate(&p->desc, c.compute, c.scale));
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &c.pointer_mode,
                sizeof c.pointer_mode);
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &c.transa, sizeof c.transa);
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &c.transb, sizeof c.transb);
    lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &c.epilogue, sizeof c.epilogue);
    if (c.bias)
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &c.bias_type,
                    sizeof c.bias_type);
    if (c.aux)
        lt_desc_set(lt, p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &c.aux_ld,
                    sizeof c.aux_ld);
    // The heuristic reads these two for their alignment.
    lt_set_pointers(lt, p, &c);

    lt_layout_create(lt, &p->la, &c.a);
    lt_layout_create(lt, &p->lb, &c.b);
    lt_layout_create(lt, &p->ld, &c.d); // C is D: same memory, same layout

    cublasLtMatmulPreference_t pref;
    LT_CHECK(lt, lt->MatmulPreferenceCreate(&pref));
    uint64_t ws = workspace_bytes;
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &c.align_a,
                sizeof c.align_a);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &c.align_b,
                sizeof c.align_b);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c.align_c,
                sizeof c.align_c);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c.align_d,
                sizeof c.align_d);
    lt_pref_set(lt, pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &c.reduction_mask,
                sizeof c.reduction_mask);

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
    const cublasStatus_t why = st != CUBLAS_STATUS_SUCCESS ? st : found > 0 ? res.state : st;
    // An epilogue the library cannot do for these types is ours to do
    // (NOT_SUPPORTED, or no result); a rejected attribute combination reads
    // as INVALID_VALUE here too, which DIT_LT_STRICT turns into a failure.
    if (k->epilogue != CUBLASLT_EPILOGUE_DEFAULT && !lt->strict &&
        (why == CUBLAS_STATUS_SUCCESS || why == CUBLAS_STATUS_NOT_SUPPORTED ||
         why == CUBLAS_STATUS_INVALID_VALUE)) {
        struct lt_key keep = *k;
        lt_plan_release(lt, p);
        p->key = keep;
        p->used = 1;
        p->supported = 0;
        return;
    }
    char what[256];
    lt_describe(g, what, sizeof what);
    fprintf(stderr,
            "dit: cuBLASLt has no algorithm for the product %s (alignments A %u, B %u, D %u, "
            "bias %u, aux %u; epilogue %u%s): %s (%d)\n",
            what, k->align_a, k->align_b, k->align_d, k->align_bias, k->align_aux, k->epilogue,
            lt->strict && k->epilogue != CUBLASLT_EPILOGUE_DEFAULT ? ", DIT_LT_STRICT" : "",
            why == CUBLAS_STATUS_SUCCESS ? "no result" : lt->GetStatusString(why), (int)why);
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
    const struct lt_call c = lt_call_of(g);
    lt_set_pointers(lt, p, &c);
    cublasStatus_t st = lt->Matmul(lt->handle, p->desc, &c.alpha, c.A, p->la, c.B, p->lb,
                                   &c.beta, c.C, p->ld, c.D, p->ld, &p->algo, s->lt_workspace,
                                   s->lt_workspace_bytes, cuda_stream_of(ctx));
    if (st != CUBLAS_STATUS_SUCCESS) {
        char what[256];
        lt_describe(g, what, sizeof what);
        fprintf(stderr, "dit: cublasLtMatmul failed for the product %s: %s (%d)\n", what,
                lt->GetStatusString(st), (int)st);
        abort();
    }
    return 0;
}
