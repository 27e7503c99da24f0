/* The CUDA emulator's self-test: the kernels of emu_selftest.cu against
 * values worked out here from CUDA's documented semantics, so that the same
 * checks pass on a GPU (make test-cuda) and under the emulator (make
 * test-cuda-emu). The emulator-only tests check what it adds: NaN-filled
 * memory, copy checks, and aborting with a clear message on misuse. */
#include "tests/cuda/emu_selftest.h"
#include "tests/harness.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Small integers: every sum below is exact in fp32, whatever the order. */
static float *int_data(size_t n, int seed)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)((i * 7 + (size_t)seed * 13 + i / 5) % 17) - 8);
    return x;
}

static void check_block_sums(int n, int blocks, int threads)
{
    float *in = int_data((size_t)n * blocks, threads);
    float *out = malloc(blocks * sizeof *out), *out2 = malloc(blocks * sizeof *out2);
    CHECK_INT(emu_st_block_sum(in, n, blocks, threads, out, out2), 0);
    for (int b = 0; b < blocks; b++) {
        float want = 0;
        for (int i = 0; i < n; i++)
            want += in[(size_t)b * n + i];
        if (out[b] != want || out2[b] != want)
            test_fail(__FILE__, __LINE__, "threads %d block %d: block_sum %g, tree %g, want %g",
                      threads, b, out[b], out2[b], want);
    }
    free(in);
    free(out);
    free(out2);
}

TEST(emu_block_reductions)
{
    check_block_sums(300, 5, 128);
    check_block_sums(1000, 3, 32);
    check_block_sums(3000, 2, 1024);
}

TEST(emu_dynamic_shared_memory)
{
    const int n = 333, blocks = 4; /* not a multiple of the 96 threads */
    float *in = int_data((size_t)n * blocks, 1), *out = malloc((size_t)n * blocks * sizeof *out);
    CHECK_INT(emu_st_reverse(in, n, blocks, out), 0);
    for (int b = 0; b < blocks; b++)
        for (int i = 0; i < n; i++)
            if (out[b * n + i] != in[b * n + n - 1 - i]) {
                test_fail(__FILE__, __LINE__, "block %d element %d: %g, want %g", b, i,
                          out[b * n + i], in[b * n + n - 1 - i]);
                b = blocks;
                break;
            }
    free(in);
    free(out);
}

/* What lane `lane` of the warp starting at thread wb gets, per CUDA's
 * documentation of the shuffles (a source outside the lane's segment of
 * `width` lanes leaves its own value; __shfl_xor_sync may read earlier
 * segments). */
static int shfl_want(int k, int t)
{
    const int l = t % 32, wb = t - l;
    int j;
    switch (k) {
    case 0: return wb + (l ^ 1);
    case 1: return wb + (l ^ 16);
    case 2: return l + 3 < 32 ? t + 3 : t;
    case 3: return l >= 5 ? t - 5 : t;
    case 4: return wb + (l * 7) % 32;
    case 5: return wb + (l / 8) * 8 + 3;
    case 6: return l % 8 + 2 < 8 ? t + 2 : t;
    case 7: return l % 16 >= 1 ? t - 1 : t;
    case 8:
        j = l ^ 12;
        return j < (l / 8 + 1) * 8 ? wb + j : t;
    case 9: return 32 * wb + 496;
    default: return wb + (l ^ 2);
    }
}

TEST(emu_warp_shuffles)
{
    /* 1D and 2D blocks: lanes are threadIdx linearised x fastest. */
    static const int layouts[] = {64, 16, 8, 2};
    int out[64 * EMU_ST_SHFL_CASES];
    for (size_t li = 0; li < sizeof layouts / sizeof *layouts; li++) {
        memset(out, 0, sizeof out);
        CHECK_INT(emu_st_shuffles(layouts[li], out), 0);
        int bad = 0;
        for (int k = 0; k < EMU_ST_SHFL_CASES && bad < 5; k++)
            for (int t = 0; t < 64; t++)
                if (out[k * 64 + t] != shfl_want(k, t) && bad++ < 5)
                    test_fail(__FILE__, __LINE__, "block (%d,%d) case %d thread %d: %d, want %d",
                              layouts[li], 64 / layouts[li], k, t, out[k * 64 + t],
                              shfl_want(k, t));
    }
}

TEST(emu_votes_and_counting_barriers)
{
    int out[64 * EMU_ST_VOTE_CASES];
    CHECK_INT(emu_st_votes(out), 0);
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3)
        ballot |= 1u << l;
    for (int t = 0; t < 64; t++) {
        const int *o = out + t * EMU_ST_VOTE_CASES;
        const int w = t / 32, l = t % 32;
        unsigned want[EMU_ST_VOTE_CASES] = {
            ballot, w == 1, w == 0, 13, 1, 1, (unsigned)(w * 1024 + 496), 0xfu << (l / 4 * 4),
        };
        for (int k = 0; k < EMU_ST_VOTE_CASES; k++)
            if ((unsigned)o[k] != want[k])
                test_fail(__FILE__, __LINE__, "thread %d case %d: %08x, want %08x", t, k,
                          (unsigned)o[k], want[k]);
    }
}

TEST(emu_atomics_from_many_blocks)
{
    const int blocks = 64, threads = 128, n = blocks * threads;
    float fsum = 0;
    int isum = 0, bins[7], imax = 0;
    double dsum = 0;
    CHECK_INT(emu_st_atomics(blocks, threads, &fsum, &isum, &dsum, bins, &imax), 0);
    CHECK(fsum == (float)n);
    CHECK_INT(isum, n);
    CHECK(dsum == 0.5 * n);
    CHECK_INT(imax, n - 1);
    for (int k = 0; k < 7; k++)
        CHECK_INT(bins[k], (n - k + 6) / 7);
}

TEST(emu_threads_returning_before_barriers)
{
    const int valid = 77, blocks = 3;
    float *in = int_data((size_t)valid * blocks, 5), out[3] = {0};
    CHECK_INT(emu_st_early_return(in, valid, blocks, out), 0);
    for (int b = 0; b < blocks; b++) {
        float want = 0;
        for (int i = 0; i < valid; i++)
            want += in[b * valid + i];
        CHECK(out[b] == want);
    }
    free(in);
}

TEST(emu_3d_grid_covers_each_element_once)
{
    enum { W = 21, H = 7, D = 3 };
    int count[W * H * D], code[W * H * D], dims[6];
    CHECK_INT(emu_st_cover(count, code, dims), 0);
    static const int want_dims[6] = {8, 4, 2, 3, 2, 2};
    for (int k = 0; k < 6; k++)
        CHECK_INT(dims[k], want_dims[k]);
    int bad = 0;
    for (int z = 0; z < D; z++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int i = (z * H + y) * W + x;
                int block = x / 8 + 3 * (y / 4 + 2 * (z / 2));
                int tid = x % 8 + 8 * (y % 4 + 4 * (z % 2));
                if ((count[i] != 1 || code[i] != 1000 * block + tid) && bad++ < 5)
                    test_fail(__FILE__, __LINE__, "(%d,%d,%d): written %d times, code %d, want %d",
                              x, y, z, count[i], code[i], 1000 * block + tid);
            }
}

TEST(emu_kernel_parameters_are_per_thread)
{
    int out[96];
    CHECK_INT(emu_st_param_copy(100, 96, out), 0);
    for (int i = 0; i < 96; i++)
        CHECK_INT(out[i], 100 + i);
}

TEST(emu_launch_configuration_checks)
{
    /* Each set bit names a check of emu_st_launch_config that failed. */
    CHECK_INT(emu_st_launch_config(), 0);
}

TEST(emu_constant_memory)
{
    const float v[4] = {1.5f, -2.0f, 3.25f, 8.0f};
    float out[8];
    CHECK_INT(emu_st_constant(v, out), 0);
    for (int i = 0; i < 4; i++) {
        CHECK(out[i] == 2 * v[3 - i]);
        CHECK(out[4 + i] == v[i]);
    }
}

/* Round to nearest even, written from the formats' definitions. */
static uint16_t want_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static uint16_t want_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x477ff000u) /* 65520 and up round to infinity */
        return sign | 0x7c00u;
    if (a < 0x38800000u) /* below 2^-14: subnormal, in units of 2^-24 */
        return sign | (uint16_t)rint(fabs((double)f) * 16777216.0);
    uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return sign | (uint16_t)h;
}

TEST(emu_bf16_f16_store_rounding)
{
    const float x[] = {
        0.0f, -0.0f, 1.0f, -2.5f, 1.0f + 1.0f / 256, /* bf16 tie: to even (1.0) */
        1.0f + 3.0f / 256,                              /* bf16 tie: to even (up) */
        1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048,          /* f16 ties */
        1.0f + 1.0f / 2048 + 1.0f / 65536,               /* above the f16 tie */
        3.14159265f, -1e-3f, 65504.0f, 65519.0f, 65520.0f, 1e6f, -1e6f,
        0x1p-14f,   /* smallest normal f16 */
        0x1p-24f,   /* smallest subnormal f16 */
        0x1p-25f,   /* half of it: a tie, to zero */
        0x1.8p-24f, /* 1.5 units: a tie, to 2 units */
        1e-10f, 3.4e38f, INFINITY, -INFINITY, 1.1754944e-38f,
    };
    const int n = (int)(sizeof x / sizeof *x);
    uint16_t bits[2 * 32];
    float back[2 * 32];
    CHECK_INT(emu_st_convert(x, n, bits, back), 0);
    for (int i = 0; i < n; i++) {
        if (bits[i] != want_bf16(x[i]))
            test_fail(__FILE__, __LINE__, "bf16(%.9g): %04x, want %04x", x[i], bits[i],
                      want_bf16(x[i]));
        if (bits[n + i] != want_f16(x[i]))
            test_fail(__FILE__, __LINE__, "f16(%.9g): %04x, want %04x", x[i], bits[n + i],
                      want_f16(x[i]));
        uint32_t u = (uint32_t)bits[i] << 16;
        float b;
        memcpy(&b, &u, 4);
        if (!(back[i] == b || (isnan(back[i]) && isnan(b))))
            test_fail(__FILE__, __LINE__, "ld(bf16 %04x) = %.9g, want %.9g", bits[i], back[i], b);
    }
    /* f16 read back: exact values of the ones checked above. */
    CHECK(back[n + 2] == 1.0f);
    CHECK(back[n + 11] == 65504.0f);
    CHECK(back[n + 12] == 65504.0f);
    CHECK(isinf(back[n + 13]));
    CHECK(back[n + 17] == 0x1p-24f);
    CHECK(back[n + 18] == 0.0f);
    CHECK(back[n + 19] == 0x1p-23f);
    /* NaN stays NaN. */
    const float qnan = NAN;
    CHECK_INT(emu_st_convert(&qnan, 1, bits, back), 0);
    CHECK((bits[0] & 0x7f80u) == 0x7f80u && (bits[0] & 0x7fu) != 0);
    CHECK((bits[1] & 0x7c00u) == 0x7c00u && (bits[1] & 0x3ffu) != 0);
    CHECK(isnan(back[0]) && isnan(back[1]));
}

TEST(emu_wmma_bf16_tile)
{
    float a[256], b_cm[256], c[256], d[256];
    for (int i = 0; i < 256; i++) {
        a[i] = (float)((i * 5) % 9 - 4);
        b_cm[i] = (float)((i * 3 + 1) % 7 - 3);
        c[i] = (float)(i % 11 - 5);
    }
    CHECK_INT(emu_st_wmma(a, b_cm, c, d), 0);
    int bad = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float want = c[i * 16 + j];
            for (int k = 0; k < 16; k++)
                want += a[i * 16 + k] * b_cm[j * 16 + k];
            if (d[i * 16 + j] != want && bad++ < 5)
                test_fail(__FILE__, __LINE__, "d[%d][%d] = %g, want %g", i, j, d[i * 16 + j],
                          want);
        }
}

TEST(emu_barrier_heavy_launch)
{
    /* 64 blocks of 256 threads, 8 barriers and a block_sum each. */
    const int blocks = 64, threads = 256, rounds = 4;
    float *out = malloc(blocks * sizeof *out), ms = -1;
    CHECK_INT(emu_st_barrier_bench(blocks, threads, rounds, out, &ms), 0);
    float *v = malloc(threads * sizeof *v), *w = malloc(threads * sizeof *w);
    for (int b = 0; b < blocks; b++) {
        for (int t = 0; t < threads; t++)
            v[t] = (float)((int)(((size_t)b * threads + t) % 17) - 8);
        for (int r = 0; r < rounds; r++) {
            for (int t = 0; t < threads; t++)
                w[t] = 0.5f * (v[t] + v[(t + 1) % threads]);
            memcpy(v, w, threads * sizeof *v);
        }
        float want = 0;
        for (int t = 0; t < threads; t++)
            want += v[t];
        if (out[b] != want)
            test_fail(__FILE__, __LINE__, "block %d: %g, want %g", b, out[b], want);
    }
    CHECK(ms >= 0);
    fprintf(stderr, "emu_barrier_heavy_launch: %d blocks x %d threads in %.1f ms%s\n", blocks,
            threads, ms, emu_st_is_emulator() ? " (emulated)" : "");
    free(v);
    free(w);
    free(out);
}

/* ---- what only the emulator checks ------------------------------------------ */

TEST(emu_uninitialised_memory_reads_nan)
{
    if (!emu_st_is_emulator())
        return;
    float out[2 * 100 + 128];
    CHECK_INT(emu_st_uninitialised(100, out), 0);
    for (int i = 0; i < 2 * 100 + 128; i++)
        if (!isnan(out[i])) {
            test_fail(__FILE__, __LINE__, "element %d: %g, not NaN", i, out[i]);
            break;
        }
}

TEST(emu_copies_outside_allocations_fail)
{
    if (!emu_st_is_emulator())
        return;
    CHECK_INT(emu_st_bad_copies(), 0);
}

/* Runs emu_st_misuse(which) in a child; returns its stderr (malloc'd) and
 * sets *sig to the signal that ended it (0 if it exited). */
static char *misuse(int which, int *sig)
{
    const char *path = test_tmp_path("stderr.txt");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        alarm(30); /* a deadlock the emulator missed ends as SIGALRM */
        setenv("DIT_CUDA_EMU_TIMEOUT", "1", 1);
        emu_st_misuse(which);
        _exit(4);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return test_read_file(path, NULL);
}

TEST(emu_misuse_aborts_with_a_message)
{
    if (!emu_st_is_emulator())
        return;
    static const char *const want[] = {
        "deadlock",          "has returned",           "does not exist",
        "not device memory", "different warp intrinsics", "outside a kernel",
        "still runs after 1 s",
    };
    for (int which = 0; which < 7; which++) {
        int sig = 0;
        char *msg = misuse(which, &sig);
        if (sig != SIGABRT)
            test_fail(__FILE__, __LINE__, "misuse %d: ended by signal %d: %s", which, sig,
                      msg ? msg : "");
        CHECK_CONTAINS(msg, "cuda_emu: ");
        CHECK_CONTAINS(msg, want[which]);
        if (which != 5)
            CHECK_CONTAINS(msg, "misuse_kernel");
        free(msg);
    }
}
