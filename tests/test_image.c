/* SPDX-License-Identifier: MIT */
/* Image preprocessing (tandem/image.h): JPEG decoding of the shared photographs and of damaged
 * copies, the splitmix64 generator, RandomResizedCrop parameters (attempts and torchvision's
 * fallback), the bilinear crop-resize with flip, u8 HWC -> f32 CHW normalisation, and every
 * error each function can return.
 *
 * Tests whose name has "jpeg" need libjpeg in the build: without it they exit 77 (skipped)
 * when run alone, as CTest runs them; jpeg_decoder_availability checks the TDM_ENODEV path. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tdm_test.h"

/* ---- helpers ---------------------------------------------------------------------------- */

#define PHOTO_W 640
#define PHOTO_H 427
#define PHOTO_BYTES ((size_t)PHOTO_W * PHOTO_H * 3)

static void need_jpeg(void)
{
    if (!tdm_image_have_jpeg())
        skip();
}

/* The test data: $TDM_DATA_DIR (CTest sets it), else tests/data beside this source file (the
 * build's __FILE__ is the source path), so the executable also runs by hand from anywhere. */
static const char *data_path(const char *name)
{
    static char buf[4][512];
    static int i;
    char *b = buf[i++ % 4];
    const char *dir = getenv("TDM_DATA_DIR");
    if (dir && *dir) {
        snprintf(b, 512, "%s/%s", dir, name);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        int n = slash ? (int)(slash - __FILE__) : 1;
        snprintf(b, 512, "%.*s/data/%s", n, slash ? __FILE__ : ".", name);
    }
    return b;
}

static char g_dir[64];

static void mk_tmpdir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/tdm-image-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void rm_tmpdir(void)
{
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *P(const char *name)
{
    static char buf[8][256];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 256, "%s/%s", g_dir, name);
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Mean of channel c of an RGB u8 HWC image. */
static double channel_mean(const uint8_t *px, size_t n_pixels, int c)
{
    double s = 0;
    for (size_t i = 0; i < n_pixels; i++)
        s += px[i * 3 + (size_t)c];
    return s / (double)n_pixels;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* Offset of the SOFn segment's marker in a JPEG, found by walking the segments (an EXIF
 * thumbnail inside APP1 has its own SOF, which a byte search would find first). */
static size_t find_sof(const unsigned char *d, size_t n)
{
    size_t i = 2;
    while (i + 4 <= n) {
        assert_int_equal(d[i], 0xff);
        unsigned m = d[i + 1];
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc)
            return i;
        i += 2 + ((size_t)d[i + 2] << 8 | d[i + 3]);
    }
    fail_msg("no SOF marker");
    return 0;
}

/* 16x16 JPEGs written by PIL 9.4: grayscale level 100, and an Adobe CMYK (30, 120, 200, 40)
 * that PIL decodes to RGB (190, 114, 46). */
static const unsigned char gray_jpg[335] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02,
    0x01, 0x01, 0x01, 0x02, 0x02, 0x02, 0x02, 0x02, 0x04, 0x03, 0x02, 0x02, 0x02, 0x02, 0x05, 0x04,
    0x04, 0x03, 0x04, 0x06, 0x05, 0x06, 0x06, 0x06, 0x05, 0x06, 0x06, 0x06, 0x07, 0x09, 0x08, 0x06,
    0x07, 0x09, 0x07, 0x06, 0x06, 0x08, 0x0b, 0x08, 0x09, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x06, 0x08,
    0x0b, 0x0c, 0x0b, 0x0a, 0x0c, 0x09, 0x0a, 0x0a, 0x0a, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0x00, 0x10,
    0x00, 0x10, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0x00, 0x1f, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04,
    0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0xff, 0xc4, 0x00, 0xb5, 0x10, 0x00, 0x02, 0x01, 0x03,
    0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01, 0x02, 0x03, 0x00,
    0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32,
    0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
    0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35,
    0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55,
    0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75,
    0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2,
    0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9,
    0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6,
    0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xff, 0xda,
    0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, 0xf0, 0xfa, 0x28, 0xa2, 0xbf, 0xff, 0xd9,
};
static const unsigned char cmyk_jpg[361] = {
    0xff, 0xd8, 0xff, 0xee, 0x00, 0x0e, 0x41, 0x64, 0x6f, 0x62, 0x65, 0x00, 0x64, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01,
    0x01, 0x02, 0x02, 0x02, 0x02, 0x02, 0x04, 0x03, 0x02, 0x02, 0x02, 0x02, 0x05, 0x04, 0x04, 0x03,
    0x04, 0x06, 0x05, 0x06, 0x06, 0x06, 0x05, 0x06, 0x06, 0x06, 0x07, 0x09, 0x08, 0x06, 0x07, 0x09,
    0x07, 0x06, 0x06, 0x08, 0x0b, 0x08, 0x09, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x06, 0x08, 0x0b, 0x0c,
    0x0b, 0x0a, 0x0c, 0x09, 0x0a, 0x0a, 0x0a, 0xff, 0xc0, 0x00, 0x14, 0x08, 0x00, 0x10, 0x00, 0x10,
    0x04, 0x43, 0x11, 0x00, 0x4d, 0x11, 0x00, 0x59, 0x11, 0x00, 0x4b, 0x11, 0x00, 0xff, 0xc4, 0x00,
    0x1f, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0xff, 0xc4,
    0x00, 0xb5, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00,
    0x00, 0x01, 0x7d, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13,
    0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15,
    0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4,
    0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2,
    0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9,
    0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5,
    0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xff, 0xda, 0x00, 0x0e, 0x04, 0x43, 0x00, 0x4d, 0x00, 0x59, 0x00,
    0x4b, 0x00, 0x00, 0x3f, 0x00, 0xfd, 0x84, 0xad, 0xca, 0xfc, 0xdb, 0xaf, 0xd5, 0xca, 0x28, 0xa2,
    0x8a, 0x28, 0xa2, 0x8a, 0x28, 0xa2, 0x8a, 0xff, 0xd9,
};

/* ---- JPEG decoding ------------------------------------------------------------------------ */

static void test_jpeg_decoder_availability(void **state)
{
    (void)state;
    uint8_t px[16 * 16 * 3];
    tdm_image_info info;
    char err[256];
    int rc =
        tdm_image_decode_jpeg(gray_jpg, sizeof gray_jpg, 0, px, sizeof px, &info, err, sizeof err);
    if (tdm_image_have_jpeg()) {
        assert_int_equal(rc, 0);
        assert_string_equal(err, "");
    } else {
        /* Every decoder says why, whatever its arguments. */
        assert_int_equal(rc, TDM_ENODEV);
        assert_non_null(strstr(err, "without libjpeg"));
        assert_int_equal(tdm_image_jpeg_info(gray_jpg, sizeof gray_jpg, &info, err, sizeof err),
                         TDM_ENODEV);
        assert_int_equal(tdm_image_read_jpeg("x.jpg", 0, px, sizeof px, &info, err, sizeof err),
                         TDM_ENODEV);
    }
}

/* The two photographs: size, and per-channel means as PIL 9.4 (same libjpeg-turbo, accurate
 * IDCT, fancy upsampling) decodes them, within half a level. */
static void test_jpeg_decode_photographs(void **state)
{
    (void)state;
    need_jpeg();
    static const struct {
        const char *name;
        double mean[3];
        uint8_t first[3];
    } photos[] = {
        {"china.jpg", {144.720, 145.469, 140.919}, {174, 201, 231}},
        {"flower.jpg", {55.134, 73.579, 57.000}, {2, 19, 13}},
    };
    uint8_t *px = malloc(PHOTO_BYTES);
    assert_non_null(px);
    for (size_t k = 0; k < 2; k++) {
        tdm_image_info info;
        char err[256] = "x";
        memset(px, 0, PHOTO_BYTES);
        int rc = tdm_image_read_jpeg(data_path(photos[k].name), 0, px, PHOTO_BYTES, &info, err,
                                     sizeof err);
        assert_int_equal(rc, 0);
        assert_string_equal(err, "");
        assert_int_equal(info.width, PHOTO_W);
        assert_int_equal(info.height, PHOTO_H);
        assert_int_equal(info.channels, 3);
        assert_int_equal(info.src_components, 3);
        assert_int_equal(info.bytes, PHOTO_BYTES);
        assert_int_equal(info.warnings, 0);
        size_t n = (size_t)PHOTO_W * PHOTO_H;
        for (int c = 0; c < 3; c++) {
            double m = channel_mean(px, n, c);
            assert_true(fabs(m - photos[k].mean[c]) < 0.5);
            assert_int_equal(px[c], photos[k].first[c]);
        }
        /* Not constant: some pixel differs from the first in every channel. */
        size_t i = 1;
        while (i < n && (px[3 * i] == px[0] || px[3 * i + 1] == px[1] || px[3 * i + 2] == px[2]))
            i++;
        assert_true(i < n);
    }
    free(px);
}

static void test_jpeg_file_and_memory_agree(void **state)
{
    (void)state;
    need_jpeg();
    size_t n;
    unsigned char *file = read_bytes(data_path("flower.jpg"), &n);
    uint8_t *a = malloc(PHOTO_BYTES), *b = malloc(PHOTO_BYTES);
    assert_non_null(a);
    assert_non_null(b);
    tdm_image_info ia, ib, ih;
    assert_int_equal(tdm_image_jpeg_info(file, n, &ih, NULL, 0), 0);
    assert_int_equal(ih.width, PHOTO_W);
    assert_int_equal(ih.height, PHOTO_H);
    assert_int_equal(ih.bytes, PHOTO_BYTES);
    assert_int_equal(tdm_image_decode_jpeg(file, n, 0, a, PHOTO_BYTES, &ia, NULL, 0), 0);
    assert_int_equal(tdm_image_read_jpeg(data_path("flower.jpg"), 0, b, PHOTO_BYTES, &ib, NULL, 0),
                     0);
    assert_int_equal(ia.bytes, ib.bytes);
    assert_memory_equal(a, b, PHOTO_BYTES);
    free(a);
    free(b);
    free(file);
}

static void test_jpeg_fast_mode_close_to_accurate(void **state)
{
    (void)state;
    need_jpeg();
    uint8_t *a = malloc(PHOTO_BYTES), *b = malloc(PHOTO_BYTES);
    assert_non_null(a);
    assert_non_null(b);
    tdm_image_info info;
    assert_int_equal(tdm_image_read_jpeg(data_path("china.jpg"), 0, a, PHOTO_BYTES, &info, NULL, 0),
                     0);
    assert_int_equal(tdm_image_read_jpeg(data_path("china.jpg"), TDM_IMAGE_JPEG_FAST, b,
                                         PHOTO_BYTES, &info, NULL, 0),
                     0);
    double sad = 0;
    for (size_t i = 0; i < PHOTO_BYTES; i++)
        sad += abs((int)a[i] - (int)b[i]);
    assert_true(sad / (double)PHOTO_BYTES < 3.0);
    free(a);
    free(b);
}

static void test_jpeg_grayscale_and_cmyk_to_rgb(void **state)
{
    (void)state;
    need_jpeg();
    uint8_t px[16 * 16 * 3];
    tdm_image_info info;
    char err[256];
    assert_int_equal(
        tdm_image_decode_jpeg(gray_jpg, sizeof gray_jpg, 0, px, sizeof px, &info, err, sizeof err),
        0);
    assert_int_equal(info.src_components, 1);
    assert_int_equal(info.channels, 3);
    for (size_t i = 0; i < sizeof px; i++)
        assert_int_equal(px[i], 100);
    assert_int_equal(
        tdm_image_decode_jpeg(cmyk_jpg, sizeof cmyk_jpg, 0, px, sizeof px, &info, err, sizeof err),
        0);
    assert_int_equal(info.src_components, 4);
    assert_int_equal(info.width, 16);
    assert_int_equal(info.bytes, sizeof px);
    static const uint8_t want[3] = {190, 114, 46};
    for (size_t i = 0; i < sizeof px; i++)
        assert_int_equal(px[i], want[i % 3]);
}

static void test_jpeg_buffer_too_small_is_enospc(void **state)
{
    (void)state;
    need_jpeg();
    uint8_t *px = malloc(PHOTO_BYTES);
    assert_non_null(px);
    memset(px, 0xab, PHOTO_BYTES);
    tdm_image_info info;
    char err[256] = "";
    int rc =
        tdm_image_read_jpeg(data_path("china.jpg"), 0, px, PHOTO_BYTES - 1, &info, err, sizeof err);
    assert_int_equal(rc, TDM_ENOSPC);
    assert_int_equal(info.bytes, PHOTO_BYTES);
    assert_int_equal(info.width, PHOTO_W);
    assert_int_equal(info.height, PHOTO_H);
    char needed[32];
    snprintf(needed, sizeof needed, "%zu", PHOTO_BYTES);
    assert_non_null(strstr(err, needed));
    /* Nothing was decoded into the buffer. */
    for (size_t i = 0; i < PHOTO_BYTES; i++)
        assert_int_equal(px[i], 0xab);
    /* No buffer at all asks for the size. */
    size_t n;
    unsigned char *file = read_bytes(data_path("china.jpg"), &n);
    memset(&info, 0, sizeof info);
    assert_int_equal(tdm_image_decode_jpeg(file, n, 0, NULL, 0, &info, err, sizeof err),
                     TDM_ENOSPC);
    assert_int_equal(info.bytes, PHOTO_BYTES);
    free(file);
    free(px);
}

/* One damaged input, from a file and from memory: an error code, a message, no crash. With
 * `lenient_too`, TDM_IMAGE_JPEG_LENIENT must refuse it as well (truncation, structure errors);
 * otherwise lenient decoding may give a (garbled) picture, but not crash. */
static void expect_damaged(const char *path, const unsigned char *bytes, size_t n, int want,
                           const char *want_msg, bool lenient_too)
{
    uint8_t *px = malloc(PHOTO_BYTES);
    assert_non_null(px);
    tdm_image_info info;
    char err[256] = "";
    int rc = tdm_image_read_jpeg(path, 0, px, PHOTO_BYTES, &info, err, sizeof err);
    if (rc != want)
        fail_msg("%s: %s (%s), expected %s", path, tdm_status_name(rc), err, tdm_status_name(want));
    assert_true(strlen(err) > 0);
    if (want_msg && !strstr(err, want_msg))
        fail_msg("%s: message '%s' lacks '%s'", path, err, want_msg);
    if (bytes) {
        err[0] = '\0';
        rc = tdm_image_decode_jpeg(bytes, n, 0, px, PHOTO_BYTES, &info, err, sizeof err);
        assert_int_equal(rc, TDM_EFORMAT);
        assert_true(strlen(err) > 0);
        rc = tdm_image_decode_jpeg(bytes, n, TDM_IMAGE_JPEG_LENIENT, px, PHOTO_BYTES, &info, err,
                                   sizeof err);
        if (lenient_too)
            assert_int_equal(rc, TDM_EFORMAT);
        else
            assert_true(rc == 0 || rc == TDM_EFORMAT);
    }
    free(px);
}

static void test_jpeg_damaged_files_are_errors(void **state)
{
    (void)state;
    need_jpeg();
    mk_tmpdir();
    size_t n;
    unsigned char *orig = read_bytes(data_path("china.jpg"), &n);
    unsigned char *d = malloc(n);
    assert_non_null(d);

    /* Truncated to half: libjpeg would fill the rest with grey and warn; an error here. */
    write_bytes(P("half.jpg"), orig, n / 2);
    expect_damaged(P("half.jpg"), orig, n / 2, TDM_EFORMAT, "Premature end", true);
    /* Only the last bytes (EOI) missing. */
    write_bytes(P("noeoi.jpg"), orig, n - 2);
    expect_damaged(P("noeoi.jpg"), orig, n - 2, TDM_EFORMAT, NULL, true);
    /* Header only. */
    write_bytes(P("head.jpg"), orig, 600);
    expect_damaged(P("head.jpg"), orig, 600, TDM_EFORMAT, NULL, true);

    /* A middle chunk of the entropy-coded data overwritten with garbage, several patterns. */
    for (uint32_t seed = 1; seed <= 4; seed++) {
        memcpy(d, orig, n);
        fill_pattern(d + n / 2, 1024, seed);
        write_bytes(P("garbage.jpg"), d, n);
        expect_damaged(P("garbage.jpg"), d, n, TDM_EFORMAT, NULL, false);
    }
    /* Wrong magic: a PNG signature, and the first byte changed. */
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
    write_bytes(P("png.jpg"), png, sizeof png);
    expect_damaged(P("png.jpg"), png, sizeof png, TDM_EFORMAT, "Not a JPEG", true);
    memcpy(d, orig, n);
    d[0] = 0x00;
    write_bytes(P("magic.jpg"), d, n);
    expect_damaged(P("magic.jpg"), d, n, TDM_EFORMAT, "Not a JPEG", true);
    /* A single byte. */
    write_bytes(P("one.jpg"), orig, 1);
    expect_damaged(P("one.jpg"), orig, 1, TDM_EFORMAT, NULL, true);
    /* Empty file (and empty memory). */
    write_bytes(P("empty.jpg"), NULL, 0);
    expect_damaged(P("empty.jpg"), orig, 0, TDM_EFORMAT, "empty", true);
    /* A file that cannot be read: missing, a directory, no permission (unless root). */
    expect_damaged(P("missing.jpg"), NULL, 0, TDM_EIO, "missing.jpg", true);
    expect_damaged(g_dir, NULL, 0, TDM_EIO, "not a regular file", true);
    write_bytes(P("noperm.jpg"), orig, n);
    assert_int_equal(chmod(P("noperm.jpg"), 0), 0);
    if (geteuid() != 0)
        expect_damaged(P("noperm.jpg"), NULL, 0, TDM_EIO, "Permission denied", true);

    free(d);
    free(orig);
    rm_tmpdir();
}

/* Extraneous bytes between two header segments: libjpeg warns ("Corrupt JPEG data: 3
 * extraneous bytes before marker 0xe0") and decodes every pixel. Strict: an error; lenient:
 * the picture and a warning. */
static void test_jpeg_lenient_tolerates_warnings_not_truncation(void **state)
{
    (void)state;
    need_jpeg();
    size_t n;
    unsigned char *orig = read_bytes(data_path("china.jpg"), &n);
    assert_int_equal(orig[2], 0xff);
    unsigned char *d = malloc(n + 3);
    assert_non_null(d);
    memcpy(d, orig, 2); /* SOI */
    memcpy(d + 2, "abc", 3);
    memcpy(d + 5, orig + 2, n - 2);
    uint8_t *a = malloc(PHOTO_BYTES), *b = malloc(PHOTO_BYTES);
    assert_non_null(a);
    assert_non_null(b);
    tdm_image_info info;
    char err[256];
    assert_int_equal(tdm_image_decode_jpeg(orig, n, 0, a, PHOTO_BYTES, &info, NULL, 0), 0);
    assert_int_equal(tdm_image_decode_jpeg(d, n + 3, 0, b, PHOTO_BYTES, &info, err, sizeof err),
                     TDM_EFORMAT);
    assert_non_null(strstr(err, "extraneous"));
    assert_int_equal(tdm_image_decode_jpeg(d, n + 3, TDM_IMAGE_JPEG_LENIENT, b, PHOTO_BYTES, &info,
                                           err, sizeof err),
                     0);
    assert_int_equal(info.warnings, 1);
    assert_memory_equal(a, b, PHOTO_BYTES);
    /* The header alone: the warning counted, not an error. */
    memset(&info, 0, sizeof info);
    assert_int_equal(tdm_image_jpeg_info(d, n + 3, &info, err, sizeof err), 0);
    assert_int_equal(info.width, PHOTO_W);
    assert_int_equal(info.warnings, 1);
    /* Truncated stays an error in lenient mode. */
    assert_int_equal(tdm_image_decode_jpeg(orig, n - 1000, TDM_IMAGE_JPEG_LENIENT, b, PHOTO_BYTES,
                                           &info, err, sizeof err),
                     TDM_EFORMAT);
    assert_non_null(strstr(err, "Premature end"));
    free(a);
    free(b);
    free(d);
    free(orig);
}

static void test_jpeg_absurd_dimensions_refused(void **state)
{
    (void)state;
    need_jpeg();
    size_t n;
    unsigned char *d = read_bytes(data_path("flower.jpg"), &n);
    size_t sof = find_sof(d, n);
    /* SOF: FF Cn, length(2), precision(1), height(2), width(2). */
    assert_int_equal(d[sof + 5] << 8 | d[sof + 6], PHOTO_H);
    assert_int_equal(d[sof + 7] << 8 | d[sof + 8], PHOTO_W);
    d[sof + 5] = d[sof + 7] = 0xfd; /* 65000 x 65000: 4.2 G pixels */
    d[sof + 6] = d[sof + 8] = 0xe8;
    uint8_t px[64];
    tdm_image_info info;
    char err[256] = "";
    assert_int_equal(tdm_image_decode_jpeg(d, n, 0, px, sizeof px, &info, err, sizeof err),
                     TDM_EFORMAT);
    assert_non_null(strstr(err, "65000x65000"));
    assert_int_equal(tdm_image_jpeg_info(d, n, &info, err, sizeof err), TDM_EFORMAT);
    /* Height 0 (a DNL-defined height, which libjpeg does not support). */
    d[sof + 5] = d[sof + 6] = 0;
    err[0] = '\0';
    assert_int_equal(tdm_image_decode_jpeg(d, n, 0, px, sizeof px, &info, err, sizeof err),
                     TDM_EFORMAT);
    assert_true(strlen(err) > 0);
    free(d);
}

static void test_jpeg_argument_errors(void **state)
{
    (void)state;
    need_jpeg();
    uint8_t px[16 * 16 * 3];
    tdm_image_info info;
    char err[256];
#define EXPECT(call, code)                                                                         \
    do {                                                                                           \
        err[0] = '\0';                                                                             \
        assert_int_equal((call), (code));                                                          \
        assert_true(strlen(err) > 0);                                                              \
    } while (0)
    EXPECT(tdm_image_decode_jpeg(NULL, 10, 0, px, sizeof px, &info, err, sizeof err), TDM_EINVAL);
    EXPECT(
        tdm_image_decode_jpeg(gray_jpg, sizeof gray_jpg, 0, px, sizeof px, NULL, err, sizeof err),
        TDM_EINVAL);
    EXPECT(tdm_image_decode_jpeg(gray_jpg, sizeof gray_jpg, 0, NULL, sizeof px, &info, err,
                                 sizeof err),
           TDM_EINVAL);
    EXPECT(tdm_image_decode_jpeg(gray_jpg, sizeof gray_jpg, 0x100, px, sizeof px, &info, err,
                                 sizeof err),
           TDM_EINVAL);
    EXPECT(tdm_image_jpeg_info(NULL, 10, &info, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_jpeg_info(gray_jpg, sizeof gray_jpg, NULL, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_jpeg_info(gray_jpg, 0, &info, err, sizeof err), TDM_EFORMAT);
    EXPECT(tdm_image_jpeg_info(gray_jpg, 20, &info, err, sizeof err), TDM_EFORMAT);
    EXPECT(tdm_image_read_jpeg(NULL, 0, px, sizeof px, &info, err, sizeof err), TDM_EINVAL);
    EXPECT(tdm_image_read_jpeg(data_path("china.jpg"), 0, px, sizeof px, NULL, err, sizeof err),
           TDM_EINVAL);
    EXPECT(tdm_image_read_jpeg(data_path("china.jpg"), 0, NULL, 5, &info, err, sizeof err),
           TDM_EINVAL);
    EXPECT(tdm_image_read_jpeg(data_path("china.jpg"), 0x8, px, sizeof px, &info, err, sizeof err),
           TDM_EINVAL);
#undef EXPECT
    /* No message buffer, or a tiny one: still the code, the message truncated. */
    assert_int_equal(tdm_image_decode_jpeg(NULL, 10, 0, px, sizeof px, &info, NULL, 0), TDM_EINVAL);
    assert_int_equal(tdm_image_decode_jpeg(gray_jpg, 20, 0, px, sizeof px, &info, err, 0),
                     TDM_EFORMAT);
    char small[8];
    assert_int_equal(
        tdm_image_decode_jpeg(gray_jpg, 20, 0, px, sizeof px, &info, small, sizeof small),
        TDM_EFORMAT);
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* Several threads decoding the same bytes into their own buffers (TSan checks the decoder
 * shares nothing). */
typedef struct dec_arg {
    const unsigned char *file;
    size_t n;
    uint64_t hash;
    int rc;
} dec_arg;

static void *decode_thread(void *p)
{
    dec_arg *a = p;
    uint8_t *px = malloc(PHOTO_BYTES);
    a->rc = px ? 0 : TDM_ENOMEM;
    for (int r = 0; r < 3 && a->rc == 0; r++) {
        tdm_image_info info;
        char err[128];
        a->rc = tdm_image_decode_jpeg(a->file, a->n, 0, px, PHOTO_BYTES, &info, err, sizeof err);
        uint64_t h = a->rc == 0 ? fnv1a(px, PHOTO_BYTES) : 0;
        if (r > 0 && h != a->hash)
            a->rc = -100;
        a->hash = h;
        /* The error path concurrently too. */
        if (a->rc == 0 && tdm_image_decode_jpeg(a->file, a->n / 2, 0, px, PHOTO_BYTES, &info, err,
                                                sizeof err) != TDM_EFORMAT)
            a->rc = -101;
    }
    free(px);
    return NULL;
}

static void test_jpeg_threads_decode_concurrently(void **state)
{
    (void)state;
    need_jpeg();
    size_t n;
    unsigned char *file = read_bytes(data_path("china.jpg"), &n);
    uint8_t *px = malloc(PHOTO_BYTES);
    assert_non_null(px);
    tdm_image_info info;
    assert_int_equal(tdm_image_decode_jpeg(file, n, 0, px, PHOTO_BYTES, &info, NULL, 0), 0);
    uint64_t want = fnv1a(px, PHOTO_BYTES);
    enum { T = 4 };
    pthread_t th[T];
    dec_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (dec_arg){file, n, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, decode_thread, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].rc, 0);
        assert_true(args[i].hash == want);
    }
    free(px);
    free(file);
}

/* A forked worker process decodes (nothing in the decoder depends on the parent's threads or
 * state), and its damaged-file error is an error there too. */
static void test_jpeg_in_forked_child(void **state)
{
    (void)state;
    need_jpeg();
    uint8_t *px = malloc(PHOTO_BYTES);
    assert_non_null(px);
    tdm_image_info info;
    assert_int_equal(
        tdm_image_read_jpeg(data_path("flower.jpg"), 0, px, PHOTO_BYTES, &info, NULL, 0), 0);
    uint64_t want = fnv1a(px, PHOTO_BYTES);
    const char *path = data_path("flower.jpg");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        memset(px, 0, PHOTO_BYTES);
        char err[128];
        int rc = tdm_image_read_jpeg(path, 0, px, PHOTO_BYTES, &info, err, sizeof err);
        int bad = tdm_image_decode_jpeg(px, 100, 0, px + 100, 1000, &info, err, sizeof err);
        _exit(rc == 0 && fnv1a(px, PHOTO_BYTES) == want && bad == TDM_EFORMAT ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    free(px);
}

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
        cmocka_unit_test(test_jpeg_decoder_availability),
        cmocka_unit_test(test_jpeg_decode_photographs),
        cmocka_unit_test(test_jpeg_file_and_memory_agree),
        cmocka_unit_test(test_jpeg_fast_mode_close_to_accurate),
        cmocka_unit_test(test_jpeg_grayscale_and_cmyk_to_rgb),
        cmocka_unit_test(test_jpeg_buffer_too_small_is_enospc),
        cmocka_unit_test(test_jpeg_damaged_files_are_errors),
        cmocka_unit_test(test_jpeg_lenient_tolerates_warnings_not_truncation),
        cmocka_unit_test(test_jpeg_absurd_dimensions_refused),
        cmocka_unit_test(test_jpeg_argument_errors),
        cmocka_unit_test(test_jpeg_threads_decode_concurrently),
        cmocka_unit_test(test_jpeg_in_forked_child),
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
