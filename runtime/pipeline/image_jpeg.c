/* SPDX-License-Identifier: MIT */
/* JPEG decoding (tandem/image.h) with libjpeg's decompressor (libjpeg-turbo on Debian).
 *
 * libjpeg reports fatal errors through error_exit, which by default prints and calls exit():
 * here it formats libjpeg's message into the caller's buffer and longjmps back to the call,
 * which destroys the decompressor (freeing every libjpeg allocation) and returns TDM_EFORMAT.
 * Warnings go through emit_message(-1): libjpeg then goes on, filling what is missing with
 * grey; a truncated file ("Premature end of JPEG file") is always reported as an error, and
 * so is every other warning unless the caller asked for TDM_IMAGE_JPEG_LENIENT. Nothing is
 * ever printed (output_message is a no-op). All state is in the call's frame: thread-safe,
 * fork-safe.
 *
 * libjpeg is loaded with dlopen at the first decode (pipeline/jpeg_dlopen.c): libtandem does not
 * NEED it. Without libjpeg at build time (TDM_HAVE_JPEG=0), or when it cannot be loaded at run
 * time, the decoders return TDM_ENODEV. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tandem/image.h"
#include "internal.h"

#if TDM_HAVE_JPEG
#include <jpeglib.h>
#include <jerror.h>

#include "pipeline/jpeg_dlopen.h"
#endif

#if TDM_HAVE_JPEG

int tdm_image_have_jpeg(void)
{
    return tdm__jpeg_api_get(NULL) != NULL;
}

/* 0 once libjpeg is loaded, else TDM_ENODEV with the loader's reason. */
static int need_jpeg(const char *who, char *err, size_t err_len)
{
    const char *why;
    if (tdm__jpeg_api_get(&why))
        return 0;
    return tdm__msg(err, err_len, TDM_ENODEV, "%s: %s", who, why);
}

/* More scans than any real progressive file has (libjpeg-turbo's own tools suggest 500 as a
 * limit): a crafted file with thousands of tiny scans would otherwise take minutes. */
#define MAX_SCANS 1000

typedef struct jerr {
    struct jpeg_error_mgr pub; /* first: libjpeg sees only this */
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    unsigned flags;
    int warnings;
    char msg[JMSG_LENGTH_MAX];
} jerr;

static void on_error_exit(j_common_ptr ci)
{
    jerr *e = (jerr *)ci->err;
    (*ci->err->format_message)(ci, e->msg);
    longjmp(e->jmp, 1);
}

static void on_emit_message(j_common_ptr ci, int level)
{
    if (level >= 0) /* trace messages */
        return;
    jerr *e = (jerr *)ci->err;
    if (!(e->flags & TDM_IMAGE_JPEG_LENIENT) || ci->err->msg_code == JWRN_JPEG_EOF) {
        (*ci->err->format_message)(ci, e->msg);
        longjmp(e->jmp, 1);
    }
    e->warnings++;
}

static void on_output_message(j_common_ptr ci)
{
    (void)ci;
}

static void on_progress(j_common_ptr ci)
{
    j_decompress_ptr d = (j_decompress_ptr)ci;
    if (d->input_scan_number > MAX_SCANS) {
        jerr *e = (jerr *)ci->err;
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans", MAX_SCANS);
        longjmp(e->jmp, 1);
    }
}

/* round(a * b / 255) for a, b in 0..255, as PIL's MULDIV255. */
static inline uint8_t muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return (uint8_t)((t + (t >> 8)) >> 8);
}

/* A CMYK row (libjpeg's output for CMYK and YCCK files) to RGB, as PIL does: Adobe's files
 * store the inks inverted, so R = (255 - C) * (255 - K) / 255 is stored_C * stored_K / 255. */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, unsigned n, bool inverted)
{
    for (unsigned i = 0; i < n; i++, in += 4, out += 3) {
        unsigned c = in[0], m = in[1], y = in[2], k = in[3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        out[0] = muldiv255(c, k);
        out[1] = muldiv255(m, k);
        out[2] = muldiv255(y, k);
    }
}

/* Where the compressed bytes come from. */
typedef struct jsrc {
    const unsigned char *data; /* memory, or */
    size_t size;
    FILE *file; /* a file */
    const char *name;
} jsrc;

/* The one decode path: header (and, unless header_only, pixels). Every libjpeg call is below
 * the setjmp; nothing this frame modifies after it is read after the longjmp. */
static int run(const char *who, const jsrc *src, unsigned flags, bool header_only, uint8_t *dst,
               size_t dst_cap, tdm_image_info *info, char *err, size_t err_len)
{
    struct jpeg_decompress_struct ci;
    jerr e;
    memset(info, 0, sizeof *info);
    ci.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = on_error_exit;
    e.pub.emit_message = on_emit_message;
    e.pub.output_message = on_output_message;
    e.progress.progress_monitor = on_progress;
    e.flags = flags;
    e.warnings = 0;
    e.msg[0] = '\0';
    if (setjmp(e.jmp)) {
        jpeg_destroy_decompress(&ci);
        if (src->file && ferror(src->file))
            return tdm__msg(err, err_len, TDM_EIO, "%s: %s: read error (%s)", who, src->name, e.msg);
        return tdm__msg(err, err_len, TDM_EFORMAT, "%s: %s: %s", who, src->name, e.msg);
    }
    jpeg_create_decompress(&ci);
    ci.progress = &e.progress;
    if (src->file)
        jpeg_stdio_src(&ci, src->file);
    else
        jpeg_mem_src(&ci, src->data, (unsigned long)src->size);
    jpeg_read_header(&ci, TRUE);

    unsigned long long pixels = (unsigned long long)ci.image_width * ci.image_height;
    if (pixels == 0 || pixels > (unsigned long long)TDM_IMAGE_MAX_PIXELS) {
        int w = (int)ci.image_width, h = (int)ci.image_height;
        jpeg_destroy_decompress(&ci);
        return tdm__msg(err, err_len, TDM_EFORMAT, "%s: %s: %dx%d pixels (at most %lld accepted)", who,
                    src->name, w, h, (long long)TDM_IMAGE_MAX_PIXELS);
    }
    bool cmyk = false;
    switch (ci.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        ci.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        /* libjpeg-turbo 2.x has no CMYK -> RGB conversion: take CMYK, convert per row. */
        ci.out_color_space = JCS_CMYK;
        cmyk = true;
        break;
    default: {
        int cs = (int)ci.jpeg_color_space, nc = ci.num_components;
        jpeg_destroy_decompress(&ci);
        return tdm__msg(err, err_len, TDM_EFORMAT,
                    "%s: %s: colour space %d with %d components cannot be converted to RGB", who,
                    src->name, cs, nc);
    }
    }
    if (flags & TDM_IMAGE_JPEG_FAST) {
        ci.dct_method = JDCT_IFAST;
        ci.do_fancy_upsampling = FALSE;
    }
    jpeg_calc_output_dimensions(&ci);
    info->width = (int)ci.output_width;
    info->height = (int)ci.output_height;
    info->channels = 3;
    info->src_components = ci.num_components;
    info->bytes = (size_t)ci.output_width * ci.output_height * 3u;
    if (header_only) {
        jpeg_destroy_decompress(&ci);
        goto done;
    }
    if (dst_cap < info->bytes) {
        jpeg_destroy_decompress(&ci);
        return tdm__msg(err, err_len, TDM_ENOSPC,
                    "%s: %s: a %dx%d RGB image needs %zu bytes, the buffer has %zu", who, src->name,
                    info->width, info->height, info->bytes, dst_cap);
    }

    jpeg_start_decompress(&ci);
    const size_t stride = (size_t)ci.output_width * 3u;
    if (cmyk) {
        /* One CMYK row in libjpeg's image pool (freed with the decompressor). */
        JSAMPARRAY tmp =
            (*ci.mem->alloc_sarray)((j_common_ptr)&ci, JPOOL_IMAGE, ci.output_width * 4u, 1);
        while (ci.output_scanline < ci.output_height) {
            uint8_t *row = dst + (size_t)ci.output_scanline * stride;
            if (jpeg_read_scanlines(&ci, tmp, 1) != 1)
                ERREXIT(&ci, JERR_INPUT_EOF);
            cmyk_to_rgb(tmp[0], row, ci.output_width, ci.saw_Adobe_marker);
        }
    } else {
        JSAMPROW rows[16];
        while (ci.output_scanline < ci.output_height) {
            unsigned n = ci.output_height - ci.output_scanline;
            if (n > 16)
                n = 16;
            for (unsigned i = 0; i < n; i++)
                rows[i] = dst + ((size_t)ci.output_scanline + i) * stride;
            if (jpeg_read_scanlines(&ci, rows, n) == 0)
                ERREXIT(&ci, JERR_INPUT_EOF);
        }
    }
    jpeg_finish_decompress(&ci); /* reads up to EOI: a missing tail is reported here too */
    jpeg_destroy_decompress(&ci);
done:
    info->warnings = e.warnings;
    if (err && err_len)
        err[0] = '\0';
    return 0;
}

static int check_args(const char *who, const void *data, unsigned flags, const uint8_t *dst,
                      size_t dst_cap, const tdm_image_info *info, bool decode, char *err,
                      size_t err_len)
{
    if (!data || !info)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: %s is NULL", who, data ? "info" : "input");
    if (decode && !dst && dst_cap > 0)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: dst is NULL with dst_cap %zu", who, dst_cap);
    if (flags & ~(unsigned)(TDM_IMAGE_JPEG_LENIENT | TDM_IMAGE_JPEG_FAST))
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: unknown flags 0x%x", who, flags);
    return 0;
}

int tdm_image_jpeg_info(const void *data, size_t size, tdm_image_info *info, char *err,
                        size_t err_len)
{
    static const char who[] = "tdm_image_jpeg_info";
    int rc = check_args(who, data, 0, NULL, 0, info, false, err, err_len);
    if (rc)
        return rc;
    if ((rc = need_jpeg(who, err, err_len)) != 0) {
        memset(info, 0, sizeof *info);
        return rc;
    }
    if (size == 0) {
        memset(info, 0, sizeof *info);
        return tdm__msg(err, err_len, TDM_EFORMAT, "%s: empty input (0 bytes)", who);
    }
    /* Only the header is read: warnings about it (extraneous bytes between segments) are
     * counted, as a lenient decode would; whether the pixels decode is the decoder's call. */
    jsrc src = {data, size, NULL, "data"};
    return run(who, &src, TDM_IMAGE_JPEG_LENIENT, true, NULL, 0, info, err, err_len);
}

int tdm_image_decode_jpeg(const void *data, size_t size, unsigned flags, uint8_t *dst,
                          size_t dst_cap, tdm_image_info *info, char *err, size_t err_len)
{
    static const char who[] = "tdm_image_decode_jpeg";
    int rc = check_args(who, data, flags, dst, dst_cap, info, true, err, err_len);
    if (rc)
        return rc;
    if ((rc = need_jpeg(who, err, err_len)) != 0) {
        memset(info, 0, sizeof *info);
        return rc;
    }
    if (size == 0) {
        memset(info, 0, sizeof *info);
        return tdm__msg(err, err_len, TDM_EFORMAT, "%s: empty input (0 bytes)", who);
    }
    jsrc src = {data, size, NULL, "data"};
    return run(who, &src, flags, false, dst, dst_cap, info, err, err_len);
}

int tdm_image_read_jpeg(const char *path, unsigned flags, uint8_t *dst, size_t dst_cap,
                        tdm_image_info *info, char *err, size_t err_len)
{
    static const char who[] = "tdm_image_read_jpeg";
    int rc = check_args(who, path, flags, dst, dst_cap, info, true, err, err_len);
    if (rc)
        return rc;
    if ((rc = need_jpeg(who, err, err_len)) != 0) {
        memset(info, 0, sizeof *info);
        return rc;
    }
    memset(info, 0, sizeof *info);
    char ebuf[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tdm__msg(err, err_len, TDM_EIO, "%s: cannot open %s (%s)", who, path,
                    strerror_r(errno, ebuf, sizeof ebuf));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tdm__msg(err, err_len, TDM_EIO, "%s: cannot stat %s (%s)", who, path,
                    strerror_r(e, ebuf, sizeof ebuf));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tdm__msg(err, err_len, TDM_EIO, "%s: %s is not a regular file", who, path);
    }
    if (st.st_size == 0) {
        close(fd);
        return tdm__msg(err, err_len, TDM_EFORMAT, "%s: %s: empty file (0 bytes)", who, path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return tdm__msg(err, err_len, TDM_EIO, "%s: cannot open %s (%s)", who, path,
                    strerror_r(e, ebuf, sizeof ebuf));
    }
    jsrc src = {NULL, 0, f, path};
    rc = run(who, &src, flags, false, dst, dst_cap, info, err, err_len);
    fclose(f);
    return rc;
}

#else /* !TDM_HAVE_JPEG */

#define NO_JPEG                                                                                    \
    "tandem was built without libjpeg (TDM_WITH_JPEG=OFF or libjpeg not found: apt-get install "   \
    "libjpeg62-turbo-dev and rebuild)"

int tdm_image_have_jpeg(void)
{
    return 0;
}

int tdm_image_jpeg_info(const void *data, size_t size, tdm_image_info *info, char *err,
                        size_t err_len)
{
    (void)data, (void)size, (void)info;
    return tdm__msg(err, err_len, TDM_ENODEV, "tdm_image_jpeg_info: %s", NO_JPEG);
}

int tdm_image_decode_jpeg(const void *data, size_t size, unsigned flags, uint8_t *dst,
                          size_t dst_cap, tdm_image_info *info, char *err, size_t err_len)
{
    (void)data, (void)size, (void)flags, (void)dst, (void)dst_cap, (void)info;
    return tdm__msg(err, err_len, TDM_ENODEV, "tdm_image_decode_jpeg: %s", NO_JPEG);
}

int tdm_image_read_jpeg(const char *path, unsigned flags, uint8_t *dst, size_t dst_cap,
                        tdm_image_info *info, char *err, size_t err_len)
{
    (void)path, (void)flags, (void)dst, (void)dst_cap, (void)info;
    return tdm__msg(err, err_len, TDM_ENODEV, "tdm_image_read_jpeg: %s", NO_JPEG);
}

#endif
