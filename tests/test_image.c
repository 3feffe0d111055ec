/* SPDX-License-Identifier: MIT */
/* image: JPEG decoding (tandem/image.h): the shared photographs, damaged copies, threads,
 * forked children, and every error the decoders can return. The image operations are in
 * test_image__ops.c. Tests whose name has "jpeg" need libjpeg in the build: without it they
 * exit 77 (skipped) when run alone, as CTest runs them; jpeg_decoder_availability checks the
 * TDM_ENODEV path. */
#include "image_test_util.h"

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
    };
    /* Run alone (as CTest does), a JPEG test without libjpeg in the build is a skip. */
    if (argc > 1 && !tdm_image_have_jpeg() && strstr(argv[1], "jpeg") &&
        strcmp(argv[1], "test_jpeg_decoder_availability") != 0)
        return 77;
    return TDM_TEST_MAIN("image", tests);
}
