/* half-precision and fp8 conversions: exhaustive round trips, goldens from numpy,
 * ml_dtypes and torch, and a nearest-value reference on many pseudo-random floats */
#include "tests/harness.h"
#include "libcommon/half.h"
#include "kernels/kernels.h"
#include "libcommon/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static int f16_is_nan(uint16_t h)
{
    return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
}

static int bf16_is_nan(uint16_t h)
{
    return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu);
}

TEST(f16_every_pattern_round_trips)
{
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float x = f16_to_f32(h);
        uint16_t back = f32_to_f16(x);
        if (f16_is_nan(h)) {
            /* NaN stays NaN, same sign, comes back quiet */
            if (!isnan(x) || !f16_is_nan(back) || (back & 0x8000u) != (h & 0x8000u) ||
                !(back & 0x200u))
                bad++;
        } else if (back != h) {
            bad++;
        }
    }
    CHECK_INT(bad, 0);
    /* A few values known by heart. */
    CHECK(f16_to_f32(0x3c00) == 1.0f);
    CHECK(f16_to_f32(0xc000) == -2.0f);
    CHECK(f16_to_f32(0x7bff) == 65504.0f);
    CHECK(f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    CHECK(f16_to_f32(0x0400) == 0x1p-14f);
    CHECK(isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
    CHECK_INT(bits_of(f16_to_f32(0x8000)), 0x80000000);
}

TEST(bf16_every_pattern_round_trips)
{
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float x = bf16_to_f32(h);
        uint16_t back = f32_to_bf16(x);
        if (bf16_is_nan(h)) {
            if (!isnan(x) || !bf16_is_nan(back) || (back & 0x8000u) != (h & 0x8000u) ||
                !(back & 0x40u))
                bad++;
        } else if (back != h) {
            bad++;
        }
    }
    CHECK_INT(bad, 0);
    CHECK(bf16_to_f32(0x3f80) == 1.0f);
    CHECK(bf16_to_f32(0x7f7f) == 0x1.fep127f);
}

struct golden {
    uint32_t f;
    uint16_t h, b;
};

static struct golden *read_goldens(size_t *n)
{
    size_t size = 0;
    unsigned char *raw = (unsigned char *)test_read_file(
        test_source_path("fixtures/numeric/half_rounding.bin"), &size);
    CHECK(raw != NULL);
    CHECK(size % 8 == 0 && size >= 8 * 1000);
    if (!raw)
        return NULL;
    *n = size / 8;
    struct golden *g = calloc(*n, sizeof *g);
    for (size_t i = 0; i < *n; i++) {
        const unsigned char *p = raw + 8 * i; /* little-endian on disk */
        g[i].f = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        g[i].h = (uint16_t)(p[4] | p[5] << 8);
        g[i].b = (uint16_t)(p[6] | p[7] << 8);
    }
    free(raw);
    return g;
}

TEST(rounding_matches_numpy_and_ml_dtypes)
{
    size_t n = 0;
    struct golden *g = read_goldens(&n);
    if (!g)
        return;
    int bad_h = 0, bad_b = 0, nans = 0, ties = 0, subnormals = 0, infs = 0;
    for (size_t i = 0; i < n; i++) {
        float x = float_of(g[i].f);
        uint16_t h = f32_to_f16(x), b = f32_to_bf16(x);
        if (isnan(x)) {
            /* numpy keeps signalling NaNs signalling and ml_dtypes makes one
             * canonical NaN; both keep the sign, which is what must match. */
            nans++;
            if (!f16_is_nan(h) || (h ^ g[i].h) & 0x8000u || !(h & 0x200u))
                bad_h++;
            if (!bf16_is_nan(b) || (b ^ g[i].b) & 0x8000u || !(b & 0x40u))
                bad_b++;
            continue;
        }
        if (h != g[i].h) {
            if (bad_h++ < 10)
                test_fail(__FILE__, __LINE__, "f16(%08x) = %04x, numpy %04x", g[i].f, h, g[i].h);
        }
        if (b != g[i].b) {
            if (bad_b++ < 10)
                test_fail(__FILE__, __LINE__, "bf16(%08x) = %04x, ml_dtypes %04x", g[i].f, b, g[i].b);
        }
        ties += (g[i].f & 0xffffu) == 0x8000u;
        subnormals += (g[i].h & 0x7c00u) == 0 && (g[i].h & 0x3ffu);
        infs += (g[i].h & 0x7fffu) == 0x7c00u && !isinf(x);
    }
    free(g);
    CHECK_INT(bad_h, 0);
    CHECK_INT(bad_b, 0);
    /* The fixture exercises what it claims to. */
    CHECK(nans >= 8);
    CHECK(ties >= 100);
    CHECK(subnormals >= 50);
    CHECK(infs >= 10);
}

/* Nearest f16 by search over the sorted finite positive values, ties to the
 * even pattern: an independent statement of round-to-nearest-even. */
static uint16_t f16_reference(float x, const float *table)
{
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (a >= 65520.0)
        return sign | 0x7c00;
    int lo = 0, hi = 0x7bff; /* table[lo] <= a < table[hi] after the loop, or a >= max */
    if (a >= table[hi])
        return sign | 0x7bff;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (table[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - table[lo], dh = table[hi] - a;
    int pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    return (uint16_t)(sign | pick);
}

TEST(f16_matches_nearest_even_reference)
{
    float *table = malloc(0x7c00 * sizeof *table);
    for (int i = 0; i < 0x7c00; i++)
        table[i] = f16_to_f32((uint16_t)i);
    for (int i = 1; i < 0x7c00; i++)
        CHECK(table[i] > table[i - 1]);
    /* Exponents spread over the whole f16 range and beyond, mantissas random. */
    uint64_t s = 0x9e3779b97f4a7c15u;
    int bad = 0;
    for (int i = 0; i < 1 << 20; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        uint32_t r = (uint32_t)(s >> 32);
        uint32_t e = 96 + (r >> 24) % 48; /* 2^-31 .. 2^16 */
        uint32_t u = (r & 0x80000000u) | e << 23 | ((uint32_t)(s >> 9) & 0x7fffffu);
        float x = float_of(u);
        if (f32_to_f16(x) != f16_reference(x, table) && bad++ < 10)
            test_fail(__FILE__, __LINE__, "f16(%08x) = %04x, reference %04x", u, f32_to_f16(x),
                      f16_reference(x, table));
    }
    CHECK_INT(bad, 0);
    free(table);
}

TEST(bf16_is_nearest_even)
{
    /* Both neighbours bracket x; the result is the nearer, ties to even. */
    uint64_t s = 12345;
    int bad = 0;
    for (int i = 0; i < 1 << 20; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        uint32_t u = (uint32_t)(s >> 32);
        if ((u & 0x7f800000u) == 0x7f800000u)
            continue;
        float x = float_of(u);
        uint16_t b = f32_to_bf16(x);
        uint16_t down = (uint16_t)(u >> 16), up = (uint16_t)(down + 1);
        uint32_t low = u & 0xffffu;
        uint16_t want = low < 0x8000u ? down : low > 0x8000u ? up : (down & 1 ? up : down);
        if (b != want)
            bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(f32_to_bf16(0x1.fep127f), 0x7f7f);
    CHECK_INT(f32_to_bf16(float_of(0x7f7f8000)), 0x7f80); /* tie above max: infinity */
    CHECK_INT(f32_to_bf16(-INFINITY), 0xff80);
}

TEST(arrays_match_scalars)
{
    enum { N = 1027 };
    float src[N], back[N];
    uint16_t h[N];
    for (int i = 0; i < N; i++)
        src[i] = (float)(i - 500) * 0.37f;
    f32_to_f16_array(src, h, N);
    for (int i = 0; i < N; i++)
        CHECK_INT(h[i], f32_to_f16(src[i]));
    f16_to_f32_array(h, back, N);
    for (int i = 0; i < N; i++)
        CHECK(bits_of(back[i]) == bits_of(f16_to_f32(h[i])));
    f32_to_bf16_array(src, h, N);
    for (int i = 0; i < N; i++)
        CHECK_INT(h[i], f32_to_bf16(src[i]));
    bf16_to_f32_array(h, back, N);
    for (int i = 0; i < N; i++)
        CHECK(bits_of(back[i]) == bits_of(bf16_to_f32(h[i])));
    f32_to_f16_array(src, h, 0); /* n = 0 touches nothing */
}

/* fp8 E4M3 against torch.float8_e4m3fn (tests/reference/make_e4m3_goldens.py):
 * every code decoded, and the rounding of the ties between neighbouring
 * codes, a step either side of them, saturation, infinities, NaN, the
 * subnormals and random values at every scale. */
TEST(e4m3_is_torch_float8_e4m3fn)
{
    struct st_file *g = test_goldens_open("fixtures/numeric/e4m3_golden.safetensors");
    const struct st_tensor *tx = st_find(g, "x");
    CHECK(tx != NULL);
    if (!tx)
        return;
    const size_t n = (size_t)tx->nelem;
    float *dec = test_golden_f32(g, "decoded", 256), *x = test_golden_f32(g, "x", n);
    float *codes = test_golden_f32(g, "codes", n);
    int bad_dec = 0, bad = 0;
    for (int c = 0; c < 256; c++) {
        const float v = e4m3_to_f32((uint8_t)c);
        bad_dec += isnan(dec[c]) ? !isnan(v) || (signbit(v) != 0) != (c >= 128) : bits_of(v) != bits_of(dec[c]);
        /* and back: every code is its own value's conversion (NaN to its sign's 0x7f) */
        bad_dec += f32_to_e4m3(v) != (isnan(v) ? (uint8_t)(c | 0x7f) : (uint8_t)c);
    }
    for (size_t i = 0; i < n; i++)
        if (f32_to_e4m3(x[i]) != (uint8_t)codes[i] && bad++ < 5)
            test_fail(__FILE__, __LINE__, "e4m3 of %.9g: 0x%02x, torch 0x%02x", (double)x[i], f32_to_e4m3(x[i]),
                      (unsigned)codes[i]);
    CHECK_INT(bad_dec, 0);
    CHECK_INT(bad, 0);
    fprintf(stderr, "    %zu conversions and 256 codes as torch's\n", n);
    free(dec), free(x), free(codes);
    st_close(g);
}

/* A weight in fp8 with one scale per output row, as torch computes it
 * (amax / 448, then e4m3 of w / scale); a zero row keeps scale 1; widened
 * back (k_fp8_rows_widen's arithmetic), every value within e4m3's half
 * step (1/16 relative) of the row's largest, and exactly code * scale. */
TEST(e4m3_rows_are_torch_per_channel_fp8)
{
    struct st_file *g = test_goldens_open("fixtures/numeric/e4m3_golden.safetensors");
    const int rows = 8, cols = 50;
    float *w = test_golden_f32(g, "w", (size_t)rows * cols), *ws = test_golden_f32(g, "w_scale", rows);
    float *wc = test_golden_f32(g, "w_codes", (size_t)rows * cols);
    uint8_t codes[8 * 50];
    float scale[8];
    f32_to_e4m3_rows(w, rows, cols, codes, scale);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        bad += bits_of(scale[r]) != bits_of(ws[r]);
        float amax = 0;
        for (int c = 0; c < cols; c++)
            amax = fmaxf(amax, fabsf(w[r * cols + c]));
        for (int c = 0; c < cols; c++) {
            const int i = r * cols + c;
            bad += codes[i] != (uint8_t)wc[i];
            const float back = e4m3_to_f32(codes[i]) * scale[r];
            bad += !(fabsf(back - w[i]) <= amax / 16.0f);
        }
    }
    CHECK_INT(bad, 0);
    CHECK(scale[3] == 1.0f && codes[3 * cols] == 0);
    /* the op the products will read through widens to exactly those values */
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 1), 0);
    float wide[8 * 50];
    const struct tensor tc = {codes, KDT_U8, DEVICE_CPU, rows * cols};
    k_fp8_rows_widen(&ctx, tensor_f32(wide, rows * cols), tc, tensor_f32(scale, rows), rows, cols);
    int off = 0;
    for (int i = 0; i < rows * cols; i++)
        off += bits_of(wide[i]) != bits_of(e4m3_to_f32(codes[i]) * scale[i / cols]);
    CHECK_INT(off, 0);
    kctx_free(&ctx);
    free(w), free(ws), free(wc);
    st_close(g);
}
