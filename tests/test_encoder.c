/* The pixel encoder: DiT's normalisation and pixel_unshuffle's channel order. */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "models/encoder.h"

TEST(pixel_encoder_normalises_like_dit)
{
    struct encoder e;
    CHECK_INT(encoder_open(&e, "pixel"), 0);
    CHECK_INT(e.channels, 3);
    uint8_t rgb[2 * 1 * 3] = {0, 128, 255, 10, 20, 30};
    float out[6];
    CHECK_INT(e.encode(&e, rgb, 2, 1, out), 0);
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
    CHECK_INT(e.encode(&e, rgb, 4, 2, out), 0);
    /* pixel_unshuffle: out channel c*4 + dy*2 + dx at (oy, ox) = in (c, 2oy+dy, 2ox+dx) */
    for (int c = 0; c < 3; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++)
                for (int ox = 0; ox < 2; ox++) {
                    int v = 100 * c + 10 * dy + 2 * ox + dx;
                    CHECK_NEAR(out[(c * 4 + dy * 2 + dx) * 2 + ox], ((float)v / 255.0f - 0.5f) / 0.5f, 0);
                }
    CHECK(e.encode(&e, rgb, 3, 2, out) != 0);
    CHECK_CONTAINS(err_get(), "multiple of the factor 2");
    encoder_close(&e);
}

TEST(unknown_encoders_are_refused)
{
    struct encoder e;
    CHECK(encoder_open(&e, "vae") != 0);
    CHECK_CONTAINS(err_get(), "not built yet");
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
    CHECK_INT(e.encode(&e, rgb, 6, 4, lat), 0);
    CHECK_INT(e.decode(&e, lat, 6, 4, back), 0);
    CHECK(memcmp(rgb, back, sizeof rgb) == 0);
    /* out of range values clamp */
    float wild[3] = {-3.0f, 3.0f, 0.0f};
    uint8_t px[3];
    struct encoder p1;
    encoder_open(&p1, "pixel");
    CHECK_INT(p1.decode(&p1, wild, 1, 1, px), 0);
    CHECK_INT(px[0], 0);
    CHECK_INT(px[1], 255);
    CHECK_INT(px[2], 128);
}
