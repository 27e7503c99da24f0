/* Philox4x32-10: published known answers, the stream layout, and the
 * distributions drawn from it */
#include "tests/harness.h"
#include "libcommon/philox.h"

#include <stdio.h>
#include <stdlib.h>

TEST(random123_known_answers)
{
    /* Random123 kat_vectors, "philox4x32 10" lines: counter, key, result. */
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof *kat; i++) {
        uint32_t out[4];
        philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int k = 0; k < 4; k++)
            if (out[k] != kat[i].out[k])
                test_fail(__FILE__, __LINE__, "vector %zu word %d: %08x, want %08x", i, k,
                          out[k], kat[i].out[k]);
    }
}

TEST(stream_layout_is_the_documented_one)
{
    uint64_t seed = 0x0123456789abcdefu;
    struct rng_stream s = rng_stream(seed, RNG_NOISE, 0x100000005u, 0x200000009u);
    CHECK(s.key[0] == 0x89abcdefu && s.key[1] == 0x01234567u);
    CHECK(s.ctr[0] == 0 && s.ctr[1] == 9 && s.ctr[2] == 5 && s.ctr[3] == RNG_NOISE);
    uint32_t v[40];
    rng_u32(&s, 0, 40, v);
    for (uint32_t b = 0; b < 10; b++) {
        uint32_t ctr[4] = {b, 9, 5, RNG_NOISE}, out[4];
        philox4x32_10(ctr, s.key, out);
        for (int k = 0; k < 4; k++)
            CHECK(v[4 * b + k] == out[k]);
    }
}

static int parse_words(const char *line, struct rng_stream *st, uint64_t *offset, char *kind,
                       const char **rest)
{
    unsigned long long seed, purpose, step, sample, off;
    int used = 0;
    if (sscanf(line, "%15s %llu %llu %llu %llu %llu%n", kind, &seed, &purpose, &step, &sample,
               &off, &used) != 6)
        return -1;
    *st = rng_stream(seed, (uint32_t)purpose, step, sample);
    *offset = off;
    *rest = line + used;
    return 0;
}

/* Values from the Python model in tests/reference/make_numeric_goldens.py. */
TEST(streams_match_reference_goldens)
{
    char *text = test_read_file(test_source_path("fixtures/numeric/philox_streams.txt"), NULL);
    CHECK(text != NULL);
    if (!text)
        return;
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char kind[16];
        struct rng_stream st;
        uint64_t off;
        const char *rest;
        if (parse_words(line, &st, &off, kind, &rest) < 0) {
            test_fail(__FILE__, __LINE__, "bad golden line: %s", line);
            continue;
        }
        double want[16];
        int n = 0, used;
        while (n < 16) {
            double d;
            unsigned int u;
            if (strcmp(kind, "normal") == 0 ? sscanf(rest, "%lf%n", &d, &used) == 1
                                            : sscanf(rest, "%x%n", &u, &used) == 1) {
                want[n++] = strcmp(kind, "normal") == 0 ? d : (double)u;
                rest += used;
            } else {
                break;
            }
        }
        CHECK(n >= 5);
        uint32_t u[16];
        float f[16];
        if (strcmp(kind, "u32") == 0) {
            rng_u32(&st, off, (size_t)n, u);
            for (int i = 0; i < n; i++)
                CHECK(u[i] == (uint32_t)want[i]);
        } else if (strcmp(kind, "uniform") == 0) {
            rng_uniform_f32(&st, off, (size_t)n, f);
            for (int i = 0; i < n; i++) {
                uint32_t bits;
                memcpy(&bits, &f[i], sizeof bits);
                CHECK(bits == (uint32_t)want[i]);
            }
        } else if (strcmp(kind, "normal") == 0) {
            rng_normal_f32(&st, off, (size_t)n, f);
            /* Another libm may differ in the last bit of the double. */
            for (int i = 0; i < n; i++)
                CHECK_NEAR(f[i], want[i], 1e-6 * (1 + fabs(want[i])));
        } else {
            test_fail(__FILE__, __LINE__, "bad golden kind: %s", kind);
        }
        lines++;
    }
    free(text);
    CHECK(lines >= 12);
}

TEST(distinct_addresses_give_distinct_numbers)
{
    struct rng_stream base = rng_stream(1234, RNG_NOISE, 10, 20);
    struct rng_stream others[] = {
        rng_stream(1235, RNG_NOISE, 10, 20),
        rng_stream(1234 + (1ull << 32), RNG_NOISE, 10, 20),
        rng_stream(1234, RNG_TIMESTEP, 10, 20),
        rng_stream(1234, RNG_NOISE, 11, 20),
        rng_stream(1234, RNG_NOISE, 10, 21),
        rng_stream(1234, RNG_NOISE, 20, 10), /* step and sample swapped */
        rng_stream(20, RNG_NOISE, 10, 1234),
    };
    uint32_t a[64], b[64];
    rng_u32(&base, 0, 64, a);
    /* Within a stream, the words are all different too. */
    for (int i = 0; i < 64; i++)
        for (int j = i + 1; j < 64; j++)
            CHECK(a[i] != a[j]);
    for (size_t k = 0; k < sizeof others / sizeof *others; k++) {
        rng_u32(&others[k], 0, 64, b);
        int same = 0;
        for (int i = 0; i < 64; i++)
            same += a[i] == b[i];
        if (same)
            test_fail(__FILE__, __LINE__, "stream %zu shares %d of 64 words", k, same);
    }
    /* Same address, same numbers. */
    struct rng_stream again = rng_stream(1234, RNG_NOISE, 10, 20);
    rng_u32(&again, 0, 64, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

TEST(pieces_equal_one_call)
{
    enum { N = 1001 };
    struct rng_stream s = rng_stream(99, RNG_SAMPLE_NOISE, 3, 7);
    static const uint64_t starts[] = {0, 1, 2, 3, 5, 1ull << 33};
    for (size_t t = 0; t < sizeof starts / sizeof *starts; t++) {
        uint64_t off = starts[t];
        uint32_t u_all[N], u_part[N];
        float f_all[N], f_part[N], n_all[N], n_part[N];
        rng_u32(&s, off, N, u_all);
        rng_uniform_f32(&s, off, N, f_all);
        rng_normal_f32(&s, off, N, n_all);
        /* Pieces of sizes 1, 2, 3, ... starting at every parity. */
        size_t i = 0, k = 1;
        while (i < N) {
            size_t m = N - i < k ? N - i : k;
            rng_u32(&s, off + i, m, u_part + i);
            rng_uniform_f32(&s, off + i, m, f_part + i);
            rng_normal_f32(&s, off + i, m, n_part + i);
            i += m;
            k++;
        }
        CHECK(memcmp(u_all, u_part, sizeof u_all) == 0);
        CHECK(memcmp(f_all, f_part, sizeof f_all) == 0);
        CHECK(memcmp(n_all, n_part, sizeof n_all) == 0);
        /* One at a time, backwards. */
        for (size_t j = N; j-- > 0;) {
            float x;
            rng_normal_f32(&s, off + j, 1, &x);
            if (memcmp(&x, &n_all[j], sizeof x) != 0) {
                test_fail(__FILE__, __LINE__, "normal %zu differs alone", j);
                break;
            }
        }
    }
    rng_normal_f32(&s, 0, 0, NULL); /* n = 0 writes nothing */
}

static double normal_cdf(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

TEST(normal_moments_and_histogram)
{
    /* Tolerances are ~10 standard errors at n = 1e6; the values are fixed
     * by the seed, so this either always passes or always fails. */
    enum { N = 1000000, BINS = 16 };
    float *z = malloc(N * sizeof *z);
    struct rng_stream s = rng_stream(2024, RNG_NOISE, 0, 0);
    rng_normal_f32(&s, 0, N, z);
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
    long hist[BINS + 2] = {0}; /* [-inf,-4), 16 bins of 0.5, [4,inf) */
    int nonfinite = 0;
    for (int i = 0; i < N; i++) {
        double x = z[i];
        nonfinite += !isfinite(x);
        m1 += x;
        m2 += x * x;
        m3 += x * x * x;
        m4 += x * x * x * x;
        int b = x < -4 ? 0 : x >= 4 ? BINS + 1 : 1 + (int)floor((x + 4) / 0.5);
        hist[b]++;
    }
    free(z);
    CHECK_INT(nonfinite, 0);
    m1 /= N, m2 /= N, m3 /= N, m4 /= N;
    double var = m2 - m1 * m1;
    CHECK_NEAR(m1, 0.0, 0.01);
    CHECK_NEAR(var, 1.0, 0.015);
    CHECK_NEAR(m3, 0.0, 0.03);
    CHECK_NEAR(m4, 3.0, 0.06);
    for (int b = 0; b < BINS + 2; b++) {
        double lo = b == 0 ? -INFINITY : -4 + 0.5 * (b - 1);
        double hi = b == BINS + 1 ? INFINITY : -4 + 0.5 * b;
        double p = normal_cdf(hi) - normal_cdf(lo);
        double tol = 10 * sqrt(p * (1 - p) / N) + 1e-5;
        if (fabs((double)hist[b] / N - p) > tol)
            test_fail(__FILE__, __LINE__, "bin %d: %g, want %g", b, (double)hist[b] / N, p);
    }
}

TEST(uniform_is_open_interval)
{
    enum { N = 4000000 };
    float *u = malloc(N * sizeof *u);
    struct rng_stream s = rng_stream(7, RNG_TIMESTEP, 1, 2);
    rng_uniform_f32(&s, 0, N, u);
    double sum = 0;
    float lo = 1, hi = 0;
    int outside = 0;
    for (int i = 0; i < N; i++) {
        outside += !(u[i] > 0.0f && u[i] < 1.0f);
        sum += u[i];
        lo = u[i] < lo ? u[i] : lo;
        hi = u[i] > hi ? u[i] : hi;
    }
    free(u);
    CHECK_INT(outside, 0);
    CHECK_NEAR(sum / N, 0.5, 0.002);
    CHECK(lo < 1e-5f && lo >= 0x1p-24f);
    CHECK(hi > 1 - 1e-5f && hi <= 1 - 0x1p-24f);
}

TEST(below_is_unbiased)
{
    struct rng_stream s = rng_stream(5, RNG_SHUFFLE, 0, 0);
    /* Chi-square with 9 degrees of freedom; 60 is beyond p = 1e-9. */
    enum { N = 1000000 };
    long count[10] = {0};
    for (uint64_t i = 0; i < N; i++)
        count[rng_below(&s, i, 10)]++;
    double chi2 = 0;
    for (int k = 0; k < 10; k++)
        chi2 += (count[k] - N / 10.0) * (count[k] - N / 10.0) / (N / 10.0);
    CHECK(chi2 < 60);

    /* A bound of about 2/3 of 2^64, where shortcuts are far off: x mod
     * bound makes the lower half of the range twice as likely, and the high
     * word of x * bound without rejection gives even values two inputs and
     * odd ones one. A third of candidates are rejected, so the retries are
     * exercised. */
    uint64_t bound = 0xaaaaaaaaaaaaaaabu;
    long lower = 0, even = 0;
    for (uint64_t i = 0; i < 200000; i++) {
        uint64_t v = rng_below(&s, i, bound);
        CHECK(v < bound);
        lower += v < bound / 2;
        even += v % 2 == 0;
    }
    CHECK_NEAR(lower / 200000.0, 0.5, 0.012);
    CHECK_NEAR(even / 200000.0, 0.5, 0.012);

    CHECK(rng_below(&s, 3, 0) == 0);
    CHECK(rng_below(&s, 3, 1) == 0);
    CHECK(rng_below(&s, 3, 10) == rng_below(&s, 3, 10));

    /* A Fisher-Yates shuffle from it is a permutation. */
    enum { M = 1000 };
    int perm[M], seen[M] = {0};
    for (int i = 0; i < M; i++)
        perm[i] = i;
    for (int i = M - 1; i > 0; i--) {
        int j = (int)rng_below(&s, (uint64_t)i, (uint64_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int fixed = 0;
    for (int i = 0; i < M; i++) {
        seen[perm[i]]++;
        fixed += perm[i] == i;
    }
    for (int i = 0; i < M; i++)
        CHECK_INT(seen[i], 1);
    CHECK(fixed < 10);
}
