/* The pixel encoder: DiT's normalisation and pixel_unshuffle's channel order. */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "models/encoder.h"
#include "models/text_encoder.h"

TEST(pixel_encoder_normalises_like_dit)
{
    struct encoder e;
    CHECK_INT(encoder_open(&e, "pixel"), 0);
    CHECK_INT(e.channels, 3);
    uint8_t rgb[2 * 1 * 3] = {0, 128, 255, 10, 20, 30};
    float out[6];
    CHECK_INT(encoder_encode(&e, rgb, 2, 1, out, NULL), 0);
    /* planes: R(x0, x1), G, B */
    CHECK_NEAR(out[0], -1.0, 0);
    CHECK_NEAR(out[1], ((float)10 / 255.0f - 0.5f) / 0.5f, 0);
    CHECK_NEAR(out[2], ((float)128 / 255.0f - 0.5f) / 0.5f, 0);
    CHECK_NEAR(out[4], 1.0, 0);
    encoder_close(&e);
}

TEST(space_to_depth_orders_channels_as_pixel_unshuffle)
{
    struct encoder e;
    CHECK_INT(encoder_open(&e, "pixel:2"), 0);
    CHECK_INT(e.channels, 12);
    CHECK_CONTAINS(e.identity, "s2d=2");
    /* 4x2 image, pixel (x, y) channel c = 100 c + 10 y + x */
    uint8_t rgb[4 * 2 * 3];
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++)
                rgb[(y * 4 + x) * 3 + c] = (uint8_t)(100 * c + 10 * y + x);
    float out[12 * 1 * 2];
    CHECK_INT(encoder_encode(&e, rgb, 4, 2, out, NULL), 0);
    /* pixel_unshuffle: out channel c*4 + dy*2 + dx at (oy, ox) = in (c, 2oy+dy, 2ox+dx) */
    for (int c = 0; c < 3; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++)
                for (int ox = 0; ox < 2; ox++) {
                    int v = 100 * c + 10 * dy + 2 * ox + dx;
                    CHECK_NEAR(out[(c * 4 + dy * 2 + dx) * 2 + ox], ((float)v / 255.0f - 0.5f) / 0.5f, 0);
                }
    CHECK(encoder_encode(&e, rgb, 3, 2, out, NULL) != 0);
    CHECK_CONTAINS(err_get(), "multiple of the factor 2");
    encoder_close(&e);
}

TEST(unknown_encoders_are_refused)
{
    struct encoder e;
    CHECK(encoder_open(&e, "jpeg-ai") != 0);
    CHECK_CONTAINS(err_get(), "jpeg-ai");
    CHECK_CONTAINS(err_get(), "vae:PATH");
    CHECK(encoder_open(&e, "vae") != 0); /* a VAE needs its weights */
    CHECK_CONTAINS(err_get(), "vae:PATH");
    CHECK(encoder_open(&e, "pixel:0") != 0);
    CHECK(encoder_open(&e, "pixel:2x") != 0);
}

TEST(pixel_decoder_inverts_the_encoder)
{
    struct encoder e;
    CHECK_INT(encoder_open(&e, "pixel/1 s2d=2"), 0); /* the identity shards record */
    CHECK_INT(e.factor, 2);
    uint8_t rgb[6 * 4 * 3], back[6 * 4 * 3];
    for (int i = 0; i < 6 * 4 * 3; i++)
        rgb[i] = (uint8_t)(i * 37 % 256);
    float lat[12 * 2 * 3];
    CHECK_INT(encoder_encode(&e, rgb, 6, 4, lat, NULL), 0);
    CHECK_INT(encoder_decode(&e, lat, 6, 4, back), 0);
    CHECK(memcmp(rgb, back, sizeof rgb) == 0);
    /* out of range values clamp */
    float wild[3] = {-3.0f, 3.0f, 0.0f};
    uint8_t px[3];
    struct encoder p1;
    encoder_open(&p1, "pixel");
    CHECK_INT(encoder_decode(&p1, wild, 1, 1, px), 0);
    CHECK_INT(px[0], 0);
    CHECK_INT(px[1], 255);
    CHECK_INT(px[2], 128);
}

TEST(pixel_is_deterministic_and_unscaled)
{
    struct encoder e;
    CHECK_INT(encoder_open(&e, "pixel:2"), 0);
    CHECK_STR(e.kind->name, "pixel");
    CHECK_STR(e.identity, "pixel/1 s2d=2");
    CHECK_INT(e.has_std, 0);
    CHECK_NEAR(e.scale, 1.0, 0);
    CHECK_NEAR(e.shift, 0.0, 0);
    CHECK_INT(encoder_latent_elems(&e, 8, 4), 12 * 2 * 4);
    CHECK(encoder_has_decoder(&e));
    uint8_t rgb[4 * 2 * 3] = {0};
    float mean[12 * 2], std[12 * 2];
    CHECK(encoder_encode(&e, rgb, 4, 2, mean, std) != 0); /* no std to give */
    CHECK_CONTAINS(err_get(), "no std");
    float z[3] = {0.25f, -0.5f, 1.0f};
    encoder_scale(&e, z, 3);
    CHECK_NEAR(z[0], 0.25, 0);
    CHECK_NEAR(z[1], -0.5, 0);
    encoder_close(&e);
    CHECK(e.kind == NULL);
}

/* A stand-in for a stochastic encoder (the VAE's place): mean = pixel / 100,
 * std = 0.5, shift 0.25 and scale 2 as an AutoencoderKL config gives them.
 * Its decoder records the z it was given. */
static float fake_seen_z[4];

static int fake_encode(const struct encoder *e, const uint8_t *rgb, int w, int h, float *mean, float *std)
{
    (void)e;
    for (int i = 0; i < w * h; i++) {
        mean[i] = rgb[i * 3] / 100.0f;
        std[i] = 0.5f;
    }
    return 0;
}

static int fake_decode(const struct encoder *e, const float *z, int w, int h, uint8_t *rgb)
{
    (void)e;
    for (int i = 0; i < w * h && i < 4; i++) {
        fake_seen_z[i] = z[i];
        rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = 0;
    }
    return 0;
}

static const struct encoder_kind fake_kind = {"fake", "fake", NULL, fake_encode, fake_decode, NULL};

TEST(stochastic_encoders_give_a_std_and_scale_their_latents)
{
    struct encoder e = {.kind = &fake_kind, .identity = "fake/1", .factor = 1, .channels = 1, .has_std = 1,
                        .scale = 2.0f, .shift = 0.25f};
    uint8_t rgb[2 * 2 * 3] = {100, 0, 0, 50, 0, 0, 0, 0, 0, 200, 0, 0};
    float mean[4], std[4];
    CHECK(encoder_encode(&e, rgb, 2, 2, mean, NULL) != 0);
    CHECK_CONTAINS(err_get(), "std needs a buffer");
    CHECK_INT(encoder_encode(&e, rgb, 2, 2, mean, std), 0);
    CHECK_NEAR(mean[0], 1.0, 1e-6);
    CHECK_NEAR(std[3], 0.5, 0);
    /* latents = (z - shift) * scale; decode undoes it before the decoder. */
    encoder_scale(&e, mean, 4);
    CHECK_NEAR(mean[0], 1.5, 1e-6);
    CHECK_NEAR(mean[3], 3.5, 1e-6);
    uint8_t out[2 * 2 * 3];
    CHECK_INT(encoder_decode(&e, mean, 2, 2, out), 0);
    CHECK_NEAR(fake_seen_z[0], 1.0, 1e-6);
    CHECK_NEAR(fake_seen_z[1], 0.5, 1e-6);
    CHECK_NEAR(fake_seen_z[3], 2.0, 1e-6);
    struct encoder mute = e;
    static const struct encoder_kind no_decoder = {"mute", "mute", NULL, fake_encode, NULL, NULL};
    mute.kind = &no_decoder;
    CHECK(!encoder_has_decoder(&mute));
    CHECK(encoder_decode(&mute, mean, 2, 2, out) != 0);
    CHECK_CONTAINS(err_get(), "has no decoder");
}

/* A text-encoder spec that no kind takes is refused naming the forms this
 * build accepts, and nothing is left open. */
TEST(text_encoder_specs_no_kind_takes_are_refused)
{
    struct text_encoder e;
    CHECK(text_encoder_open(&e, "bert:/models/text_encoder") != 0);
    CHECK_CONTAINS(err_get(), "bert:/models/text_encoder");
    CHECK_CONTAINS(err_get(), "t5:");
    CHECK(e.kind == NULL);
    CHECK(text_encoder_encode(&e, NULL, 0, NULL, NULL, NULL) != 0);
    text_encoder_close(&e);
}
