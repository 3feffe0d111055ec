/* SPDX-License-Identifier: MIT */
/* image: the operations of tandem/image.h on caller buffers: the splitmix64 generator,
 * RandomResizedCrop parameters, the bilinear crop-resize with flip, u8 HWC -> normalised f32. */
#include "image_test_util.h"

/* ---- random numbers ---------------------------------------------------------------------- */

static void test_rng_is_splitmix64_and_deterministic(void **state)
{
    (void)state;
    /* The reference splitmix64 sequence from state 0. */
    tdm_rng z = {0};
    assert_true(tdm_rng_next(&z) == 0xe220a8397b1dcdafull);
    assert_true(tdm_rng_next(&z) == 0x6e789e6aa1b965f4ull);
    assert_true(tdm_rng_next(&z) == 0x06c45d188009454full);

    tdm_rng a = tdm_rng_seed(42, 7), b = tdm_rng_seed(42, 7);
    tdm_rng c = tdm_rng_seed(42, 8), d = tdm_rng_seed(43, 7);
    int same_c = 0, same_d = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = tdm_rng_next(&a);
        assert_true(x == tdm_rng_next(&b));
        same_c += x == tdm_rng_next(&c);
        same_d += x == tdm_rng_next(&d);
    }
    assert_int_equal(same_c, 0);
    assert_int_equal(same_d, 0);

    /* Uniform in [0, 1): range, mean and a coarse histogram. */
    tdm_rng r = tdm_rng_seed(1, 0);
    int hist[10] = {0};
    double sum = 0;
    const int N = 100000;
    for (int i = 0; i < N; i++) {
        double u = tdm_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        hist[(int)(u * 10)]++;
    }
    assert_true(fabs(sum / N - 0.5) < 0.01);
    for (int k = 0; k < 10; k++)
        assert_true(hist[k] > N / 10 - 600 && hist[k] < N / 10 + 600);

    /* NULL is not a crash. */
    assert_true(tdm_rng_next(NULL) == 0);
    assert_true(tdm_rng_uniform(NULL) == 0.0);
}

/* ---- RandomResizedCrop ------------------------------------------------------------------- */

static void test_rrc_deterministic_and_within_bounds(void **state)
{
    (void)state;
    const int sizes[][2] = {{640, 427}, {427, 640}, {224, 224}, {1, 1}, {3, 500}, {4000, 3000}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int W = sizes[s][0], H = sizes[s][1];
        double A = (double)W * H;
        for (uint64_t seed = 0; seed < 2000; seed++) {
            tdm_rng r1 = tdm_rng_seed(seed, s), r2 = r1;
            tdm_image_crop c1, c2;
            char err[64] = "x";
            assert_int_equal(tdm_image_random_resized_crop_params(
                                 &r1, W, H, TDM_IMAGE_RRC_SCALE_MIN, TDM_IMAGE_RRC_SCALE_MAX,
                                 TDM_IMAGE_RRC_RATIO_MIN, TDM_IMAGE_RRC_RATIO_MAX, &c1, err,
                                 sizeof err),
                             0);
            assert_string_equal(err, "");
            assert_int_equal(tdm_image_random_resized_crop_params(
                                 &r2, W, H, TDM_IMAGE_RRC_SCALE_MIN, TDM_IMAGE_RRC_SCALE_MAX,
                                 TDM_IMAGE_RRC_RATIO_MIN, TDM_IMAGE_RRC_RATIO_MAX, &c2, NULL, 0),
                             0);
            assert_memory_equal(&c1, &c2, sizeof c1);
            assert_true(r1.state == r2.state);
            /* Inside the image. */
            assert_true(c1.width >= 1 && c1.height >= 1);
            assert_true(c1.x >= 0 && c1.y >= 0);
            assert_true(c1.x + c1.width <= W && c1.y + c1.height <= H);
            if (W * H < 100)
                continue; /* tiny images: mostly the fallback, checked elsewhere */
            /* Area and ratio within the bounds, up to the rounding of each side by 0.5. */
            double w = c1.width, h = c1.height;
            double a_lo = 0.08 * A - 0.5 * (w + h) - 0.25;
            bool fallback = c1.x == (W - c1.width) / 2 && c1.y == (H - c1.height) / 2 &&
                            (c1.width == W || c1.height == H);
            if (!fallback) {
                assert_true(w * h >= a_lo && w * h <= A);
                double r = w / h;
                /* w / h with w, h within 0.5 of sides whose ratio is within the bounds. */
                assert_true(r >= 0.75 * (w - 1) / (w - 0.5) * (h - 0.5) / h - 1e-12);
                assert_true(r <= (4.0 / 3.0) * w / (w - 0.5) * (h + 0.5) / h + 1e-12);
            }
        }
    }
    /* The placement is spread over the image: both corners' neighbourhoods are reached. */
    int left = 0, right = 0;
    for (uint64_t seed = 0; seed < 2000; seed++) {
        tdm_rng r = tdm_rng_seed(seed, 99);
        tdm_image_crop c;
        assert_int_equal(tdm_image_random_resized_crop_params(&r, 640, 427, 0.08, 0.1, 0.75,
                                                              4.0 / 3.0, &c, NULL, 0),
                         0);
        left += c.x < 20;
        right += c.x + c.width > 620;
    }
    assert_true(left > 10 && right > 10);
}

static void expect_crop(int W, int H, double s0, double s1, double r0, double r1, int x, int y,
                        int w, int h)
{
    tdm_rng r = tdm_rng_seed(5, 5);
    tdm_image_crop c;
    assert_int_equal(tdm_image_random_resized_crop_params(&r, W, H, s0, s1, r0, r1, &c, NULL, 0),
                     0);
    if (c.x != x || c.y != y || c.width != w || c.height != h)
        fail_msg("%dx%d scale (%g, %g) ratio (%g, %g): crop %dx%d at (%d, %d), expected %dx%d "
                 "at (%d, %d)",
                 W, H, s0, s1, r0, r1, c.width, c.height, c.x, c.y, w, h, x, y);
}

/* When no attempt fits, torchvision's centre crop: its numbers, worked out by hand. */
static void test_rrc_fallback_is_torchvision_center_crop(void **state)
{
    (void)state;
    /* Ratios 50..100 never fit 640x427 (w * h >= 0.08 A needs w > 640): the full width, h =
     * round(640 / 50) = 13, centred. */
    expect_crop(640, 427, 0.08, 1.0, 50, 100, 0, 207, 640, 13);
    /* Scale 2..3 never fits: the image is wider (1.499) than 4/3: full height, w =
     * round(427 * 4/3) = 569, centred. */
    expect_crop(640, 427, 2.0, 3.0, 0.75, 4.0 / 3.0, 35, 0, 569, 427);
    /* Narrow ratios for a wide image: h = 427, w = round(427 * 0.02) = 9. */
    expect_crop(640, 427, 0.08, 1.0, 0.01, 0.02, 315, 0, 9, 427);
    /* Ratio range containing the image's: the whole image. */
    expect_crop(400, 400, 2.0, 3.0, 0.75, 4.0 / 3.0, 0, 0, 400, 400);
    /* Python's round is half-to-even: 5 / 2 = 2.5 -> 2 (not 3). */
    expect_crop(5, 100, 0.08, 1.0, 2.0, 2.0, 0, 49, 5, 2);
    /* A side rounding to 0 becomes 1 (torchvision would return an empty crop). */
    expect_crop(1, 10, 0.08, 1.0, 50, 100, 0, 4, 1, 1);
}

static void test_rrc_argument_errors(void **state)
{
    (void)state;
    tdm_rng r = tdm_rng_seed(1, 1);
    tdm_image_crop c;
    char err[128];
    const double nan = NAN, inf = INFINITY;
    struct {
        tdm_rng *rng;
        int w, h;
        double s0, s1, r0, r1;
        tdm_image_crop *crop;
    } bad[] = {
        {NULL, 10, 10, 0.08, 1, 0.75, 1.33, &c}, {&r, 10, 10, 0.08, 1, 0.75, 1.33, NULL},
        {&r, 0, 10, 0.08, 1, 0.75, 1.33, &c},    {&r, 10, -1, 0.08, 1, 0.75, 1.33, &c},
        {&r, 10, 10, 0, 1, 0.75, 1.33, &c},      {&r, 10, 10, -0.1, 1, 0.75, 1.33, &c},
        {&r, 10, 10, 0.5, 0.4, 0.75, 1.33, &c},  {&r, 10, 10, nan, 1, 0.75, 1.33, &c},
        {&r, 10, 10, 0.08, inf, 0.75, 1.33, &c}, {&r, 10, 10, 0.08, 1, 0, 1.33, &c},
        {&r, 10, 10, 0.08, 1, 1.33, 0.75, &c},   {&r, 10, 10, 0.08, 1, 0.75, nan, &c},
        {&r, 10, 10, 0.08, 1, -inf, 1.33, &c},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = tdm_image_random_resized_crop_params(bad[i].rng, bad[i].w, bad[i].h, bad[i].s0,
                                                      bad[i].s1, bad[i].r0, bad[i].r1, bad[i].crop,
                                                      err, sizeof err);
        if (rc != TDM_EINVAL)
            fail_msg("case %zu: %s", i, tdm_status_name(rc));
        assert_true(strlen(err) > 0);
    }
}

/* ---- resize ------------------------------------------------------------------------------ */

static void test_resize_constant_stays_constant(void **state)
{
    (void)state;
    const int dims[][4] = {{7, 5, 3, 11}, {640, 427, 224, 224}, {3, 3, 1000, 2}, {1, 1, 9, 9}};
    for (int ch = 1; ch <= TDM_IMAGE_MAX_CHANNELS; ch++) {
        for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
            int W = dims[k][0], H = dims[k][1], dw = dims[k][2], dh = dims[k][3];
            size_t sn = (size_t)W * H * ch, dn = (size_t)dw * dh * ch;
            uint8_t *src = malloc(sn), *dst = malloc(dn);
            assert_non_null(src);
            assert_non_null(dst);
            for (size_t i = 0; i < sn; i++)
                src[i] = (uint8_t)(37 + 50 * (i % ch));
            for (int flip = 0; flip < 2; flip++) {
                memset(dst, 0, dn);
                assert_int_equal(
                    tdm_image_resize_crop(src, W, H, ch, NULL, dst, dw, dh, flip, NULL, 0), 0);
                for (size_t i = 0; i < dn; i++)
                    assert_int_equal(dst[i], 37 + 50 * (i % ch));
            }
            free(src);
            free(dst);
        }
    }
}

static void test_resize_same_size_crop_is_identity(void **state)
{
    (void)state;
    const int W = 97, H = 61;
    for (int ch = 1; ch <= TDM_IMAGE_MAX_CHANNELS; ch++) {
        size_t sn = (size_t)W * H * ch;
        uint8_t *src = malloc(sn), *dst = malloc(sn);
        assert_non_null(src);
        assert_non_null(dst);
        fill_pattern(src, sn, (uint32_t)ch);
        assert_int_equal(tdm_image_resize_crop(src, W, H, ch, NULL, dst, W, H, 0, NULL, 0), 0);
        assert_memory_equal(src, dst, sn);
        tdm_image_crop whole = {0, 0, W, H};
        memset(dst, 0, sn);
        assert_int_equal(tdm_image_resize_crop(src, W, H, ch, &whole, dst, W, H, 0, NULL, 0), 0);
        assert_memory_equal(src, dst, sn);
        /* A sub-rectangle resized to its own size is a plain copy of it. */
        tdm_image_crop sub = {13, 7, 40, 30};
        assert_int_equal(tdm_image_resize_crop(src, W, H, ch, &sub, dst, 40, 30, 0, NULL, 0), 0);
        for (int y = 0; y < 30; y++)
            assert_memory_equal(dst + (size_t)y * 40 * ch, src + ((size_t)(y + 7) * W + 13) * ch,
                                (size_t)40 * ch);
        free(src);
        free(dst);
    }
}

static void test_resize_flip_mirrors_and_twice_is_identity(void **state)
{
    (void)state;
    const int W = 50, H = 20, ch = 3;
    size_t sn = (size_t)W * H * ch;
    uint8_t *src = malloc(sn), *once = malloc(sn), *twice = malloc(sn);
    assert_non_null(src);
    assert_non_null(once);
    assert_non_null(twice);
    fill_pattern(src, sn, 9);
    assert_int_equal(tdm_image_resize_crop(src, W, H, ch, NULL, once, W, H, 1, NULL, 0), 0);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            assert_memory_equal(once + ((size_t)y * W + x) * ch,
                                src + ((size_t)y * W + (W - 1 - x)) * ch, ch);
    assert_int_equal(tdm_image_resize_crop(once, W, H, ch, NULL, twice, W, H, 1, NULL, 0), 0);
    assert_memory_equal(src, twice, sn);
    /* Flip of a resize = the resize mirrored. */
    uint8_t a[30 * 10 * 3], b[30 * 10 * 3];
    tdm_image_crop c = {5, 3, 33, 11};
    assert_int_equal(tdm_image_resize_crop(src, W, H, ch, &c, a, 30, 10, 0, NULL, 0), 0);
    assert_int_equal(tdm_image_resize_crop(src, W, H, ch, &c, b, 30, 10, 1, NULL, 0), 0);
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 30; x++)
            assert_memory_equal(b + ((size_t)y * 30 + x) * 3, a + ((size_t)y * 30 + 29 - x) * 3, 3);
    free(src);
    free(once);
    free(twice);
}

/* 2x2 -> 4x4: sample positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1), so the
 * weights of the two source pixels per axis are (1, 0), (.75, .25), (.25, .75), (0, 1). */
static void test_resize_known_bilinear_values(void **state)
{
    (void)state;
    const uint8_t src[4] = {0, 100, 200, 40};
    static const uint8_t want[16] = {
        0,   25,  75, 100, /* top row */
        50,  59,  76, 85,  /* .75 top + .25 bottom: 58.75, 76.25 */
        150, 126, 79, 55,  /* .25 top + .75 bottom: 126.25, 78.75 */
        200, 160, 80, 40,  /* bottom row */
    };
    uint8_t dst[16];
    assert_int_equal(tdm_image_resize_crop(src, 2, 2, 1, NULL, dst, 4, 4, 0, NULL, 0), 0);
    assert_memory_equal(dst, want, 16);
    /* The same per channel of an RGB image (channel c = value + c). */
    uint8_t rgb[12], out[48];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 3; c++)
            rgb[i * 3 + c] = (uint8_t)(src[i] + 4 * c);
    assert_int_equal(tdm_image_resize_crop(rgb, 2, 2, 3, NULL, out, 4, 4, 0, NULL, 0), 0);
    for (int i = 0; i < 16; i++)
        for (int c = 0; c < 3; c++)
            assert_int_equal(out[i * 3 + c], want[i] + 4 * c);
    /* 4x4 -> 2x2: positions 0.5 and 2.5, each the mean of a 2x2 block. */
    const uint8_t big[16] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 161};
    uint8_t small[4];
    assert_int_equal(tdm_image_resize_crop(big, 4, 4, 1, NULL, small, 2, 2, 0, NULL, 0), 0);
    assert_int_equal(small[0], 35);  /* (10 + 20 + 50 + 60) / 4 */
    assert_int_equal(small[1], 55);  /* (30 + 40 + 70 + 80) / 4 */
    assert_int_equal(small[2], 115); /* (90 + 100 + 130 + 140) / 4 */
    assert_int_equal(small[3], 135); /* (110 + 120 + 150 + 161) / 4 = 135.25 */
    /* 1x1 -> 3x2: one pixel everywhere. */
    uint8_t one = 77, six[6];
    assert_int_equal(tdm_image_resize_crop(&one, 1, 1, 1, NULL, six, 3, 2, 1, NULL, 0), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(six[i], 77);
}

/* Only pixels of the crop are read: everything outside is 255, the crop 10, and the crop lies
 * in the bottom-right corner of an exactly sized heap buffer (ASan sees any overrun). */
static void test_resize_reads_only_the_crop(void **state)
{
    (void)state;
    const int W = 40, H = 30, ch = 3;
    size_t sn = (size_t)W * H * ch;
    uint8_t *src = malloc(sn);
    assert_non_null(src);
    memset(src, 255, sn);
    tdm_image_crop c = {W - 9, H - 7, 9, 7};
    for (int y = c.y; y < H; y++)
        memset(src + ((size_t)y * W + c.x) * ch, 10, (size_t)c.width * ch);
    const int sizes[][2] = {{1, 1}, {9, 7}, {100, 3}, {5, 80}, {600, 600}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t dn = (size_t)sizes[k][0] * sizes[k][1] * ch;
        uint8_t *dst = malloc(dn);
        assert_non_null(dst);
        for (int flip = 0; flip < 2; flip++) {
            assert_int_equal(tdm_image_resize_crop(src, W, H, ch, &c, dst, sizes[k][0], sizes[k][1],
                                                   flip, NULL, 0),
                             0);
            for (size_t i = 0; i < dn; i++)
                assert_int_equal(dst[i], 10);
        }
        free(dst);
    }
    free(src);
}

static void test_resize_argument_errors(void **state)
{
    (void)state;
    uint8_t src[4 * 4 * 3] = {0}, dst[8 * 8 * 3];
    char err[128];
    tdm_image_crop outside[] = {{-1, 0, 2, 2},      {0, -1, 2, 2},     {3, 0, 2, 2}, {0, 3, 2, 2},
                                {0, 0, 0, 2},       {0, 0, 2, 0},      {0, 0, 5, 4}, {0, 0, 4, 5},
                                {INT_MAX, 0, 2, 2}, {0, 0, INT_MAX, 1}};
#define EXPECT(call)                                                                               \
    do {                                                                                           \
        err[0] = '\0';                                                                             \
        assert_int_equal((call), TDM_EINVAL);                                                      \
        assert_true(strlen(err) > 0);                                                              \
    } while (0)
    EXPECT(tdm_image_resize_crop(NULL, 4, 4, 3, NULL, dst, 8, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, 4, 3, NULL, NULL, 8, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 0, 4, 3, NULL, dst, 8, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, -4, 3, NULL, dst, 8, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, 4, 3, NULL, dst, 0, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, 4, 3, NULL, dst, 8, -1, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, 4, 0, NULL, dst, 8, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, 4, 5, NULL, dst, 8, 8, 0, err, sizeof err));
    EXPECT(tdm_image_resize_crop(src, 4, 4, -3, NULL, dst, 8, 8, 0, err, sizeof err));
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++)
        EXPECT(tdm_image_resize_crop(src, 4, 4, 3, &outside[i], dst, 8, 8, 0, err, sizeof err));
#undef EXPECT
    assert_int_equal(tdm_image_resize_crop(NULL, 4, 4, 3, NULL, dst, 8, 8, 0, NULL, 0), TDM_EINVAL);
    /* Success clears the message. */
    strcpy(err, "stale");
    assert_int_equal(tdm_image_resize_crop(src, 4, 4, 3, NULL, dst, 8, 8, 0, err, sizeof err), 0);
    assert_string_equal(err, "");
}

/* ---- normalise --------------------------------------------------------------------------- */

/* Values torchvision 0.14 gives for ToTensor() then Normalize(ImageNet mean, std) of the
 * 1x2 RGB image {(0, 128, 255), (255, 0, 128)}, bit for bit (printed with float.hex()). */
static void test_normalize_exact_values(void **state)
{
    (void)state;
    const uint8_t src[6] = {0, 128, 255, 255, 0, 128};
    const float mean[3] = TDM_IMAGE_IMAGENET_MEAN, std[3] = TDM_IMAGE_IMAGENET_STD;
    static const float want[6] = {
        -0x1.0f177ap+1f, 0x1.1fdc3ap+1f,  /* R: 0, 255 */
        0x1.a43690p-3f,  -0x1.049248p+1f, /* G: 128, 0 */
        0x1.51eb86p+1f,  0x1.b4ba78p-2f,  /* B: 255, 128 */
    };
    float dst[6];
    char err[64] = "x";
    assert_int_equal(tdm_image_normalize_chw(src, 2, 1, 3, mean, std, dst, err, sizeof err), 0);
    assert_string_equal(err, "");
    for (int i = 0; i < 6; i++)
        assert_memory_equal(&dst[i], &want[i], sizeof(float));

    /* mean 0.5, std 0.5: 0 -> -1, 255 -> 1 exactly; NULL mean/std: x / 255. */
    const float half[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const uint8_t g[4] = {0, 255, 51, 0};
    float o[4];
    assert_int_equal(tdm_image_normalize_chw(g, 2, 2, 1, half, half, o, NULL, 0), 0);
    assert_true(o[0] == -1.0f && o[1] == 1.0f && o[3] == -1.0f);
    assert_int_equal(tdm_image_normalize_chw(g, 2, 2, 1, NULL, NULL, o, NULL, 0), 0);
    assert_true(o[0] == 0.0f && o[1] == 1.0f && o[2] == 0.2f && o[3] == 0.0f);

    /* Layout, 1 to 4 channels: dst[c][y][x] from src[y][x][c]. */
    for (int ch = 1; ch <= 4; ch++) {
        const int W = 5, H = 3;
        uint8_t s[5 * 3 * 4];
        float d[5 * 3 * 4];
        for (int i = 0; i < W * H * ch; i++)
            s[i] = (uint8_t)(i * 7);
        const float m[4] = {0.1f, 0.2f, 0.3f, 0.4f}, sd[4] = {1.0f, 2.0f, 0.5f, 4.0f};
        assert_int_equal(tdm_image_normalize_chw(s, W, H, ch, m, sd, d, NULL, 0), 0);
        for (int c = 0; c < ch; c++)
            for (int p = 0; p < W * H; p++) {
                float x = (float)s[p * ch + c] / 255.0f;
                float v = (x - m[c]) / sd[c];
                assert_memory_equal(&d[c * W * H + p], &v, sizeof v);
            }
    }
}

static void test_normalize_argument_errors(void **state)
{
    (void)state;
    uint8_t src[12] = {0};
    float dst[12];
    const float mean[3] = TDM_IMAGE_IMAGENET_MEAN, std[3] = TDM_IMAGE_IMAGENET_STD;
    const float zero[3] = {0.229f, 0.0f, 0.225f}, nan3[3] = {0.1f, 0.1f, NAN};
    const float inf3[3] = {INFINITY, 0.1f, 0.1f};
    char err[128];
#define EXPECT(call, code)                                                                         \
    do {                                                                                           \
        err[0] = '\0';                                                                             \
        assert_int_equal((call), (code));                                                          \
        assert_true(strlen(err) > 0);                                                              \
    } while (0)
    EXPECT(tdm_image_normalize_chw(NULL, 2, 2, 3, mean, std, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 3, mean, std, NULL, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 0, 2, 3, mean, std, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, -2, 3, mean, std, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 0, mean, std, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 5, mean, std, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 3, mean, zero, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 3, mean, nan3, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 3, inf3, std, dst, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_normalize_chw(src, 2, 2, 3, nan3, std, dst, err, sizeof err), TDM_EINVAL);
    /* INT_MAX^2 * 4 channels * 4 bytes does not fit in a 64-bit size_t (checked before any
     * access: the buffers are the small ones above). */
    const float m4[4] = {0, 0, 0, 0}, s4[4] = {1, 1, 1, 1};
    EXPECT(tdm_image_normalize_chw(src, INT_MAX, INT_MAX, 4, m4, s4, dst, err, sizeof err),
           TDM_EOVERFLOW);
#undef EXPECT
    assert_int_equal(tdm_image_normalize_chw(src, 2, 2, 3, mean, zero, dst, NULL, 0), TDM_EINVAL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_is_splitmix64_and_deterministic),
        cmocka_unit_test(test_rrc_deterministic_and_within_bounds),
        cmocka_unit_test(test_rrc_fallback_is_torchvision_center_crop),
        cmocka_unit_test(test_rrc_argument_errors),
        cmocka_unit_test(test_resize_constant_stays_constant),
        cmocka_unit_test(test_resize_same_size_crop_is_identity),
        cmocka_unit_test(test_resize_flip_mirrors_and_twice_is_identity),
        cmocka_unit_test(test_resize_known_bilinear_values),
        cmocka_unit_test(test_resize_reads_only_the_crop),
        cmocka_unit_test(test_resize_argument_errors),
        cmocka_unit_test(test_normalize_exact_values),
        cmocka_unit_test(test_normalize_argument_errors),
    };
    /* Run alone (as CTest does), a JPEG test without libjpeg in the build is a skip. */
    if (argc > 1 && !tdm_image_have_jpeg() && strstr(argv[1], "jpeg") &&
        strcmp(argv[1], "test_jpeg_decoder_availability") != 0)
        return 77;
    return TDM_TEST_MAIN("image", tests);
}
