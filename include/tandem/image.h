/* SPDX-License-Identifier: MIT */
/* tandem — image preprocessing for ML input pipelines: JPEG decoding, a seeded random number
 * generator, torchvision's RandomResizedCrop, a bilinear crop-resize with horizontal flip, and
 * u8 HWC -> normalised f32 CHW.
 *
 * What torchvision's usual training transform does per image —
 *   RandomResizedCrop(224) + RandomHorizontalFlip() + ToTensor() + Normalize(mean, std) —
 * in C, as separate steps on caller buffers:
 *
 *   tdm_image_info info;
 *   tdm_image_read_jpeg(path, 0, pixels, cap, &info, err, sizeof err);   // RGB u8 HWC
 *   tdm_rng rng = tdm_rng_seed(seed, image_index);
 *   tdm_image_crop c;
 *   tdm_image_random_resized_crop_params(&rng, info.width, info.height, TDM_IMAGE_RRC_SCALE_MIN,
 *       TDM_IMAGE_RRC_SCALE_MAX, TDM_IMAGE_RRC_RATIO_MIN, TDM_IMAGE_RRC_RATIO_MAX, &c, err, n);
 *   int flip = tdm_rng_uniform(&rng) < 0.5;
 *   tdm_image_resize_crop(pixels, info.width, info.height, 3, &c, small, 224, 224, flip, err, n);
 *   tdm_image_normalize_chw(small, 224, 224, 3, mean, std, out_f32, err, n);
 *
 * Common to every function here:
 *   - images are u8, HWC (interleaved channels), rows packed (row stride = width * channels),
 *     1..TDM_IMAGE_MAX_CHANNELS channels; sizes are ints > 0;
 *   - nothing is allocated by tandem and nothing is kept: every buffer is the caller's (the
 *     JPEG decoder lets libjpeg allocate its working memory and frees it before returning);
 *   - no global state: every function is thread-safe on distinct output buffers (several
 *     threads may read the same input) and may be called in forked worker processes;
 *   - nothing is printed and nothing aborts: errors come back as a negative TDM_E* code and,
 *     when `err` is not NULL and err_len > 0, a NUL-terminated one-line message written into
 *     err[0..err_len) (truncated to fit). On success err is set to "".
 *
 * JPEG decoding needs libjpeg (libjpeg-turbo), found at build time (CMake option
 * TDM_WITH_JPEG); without it the decode functions return TDM_ENODEV and tdm_image_have_jpeg()
 * returns 0. The other functions are pure C and always available.
 */
#ifndef TANDEM_IMAGE_H
#define TANDEM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/export.h"

/** Most channels an image may have (gray, gray+alpha, RGB, RGBA). */
#define TDM_IMAGE_MAX_CHANNELS 4
/** Most pixels (width * height) the decoder accepts: larger headers are refused as
 *  TDM_EFORMAT before anything is decoded (a hostile file cannot ask for gigabytes). 2^28 =
 *  16384 x 16384. */
#define TDM_IMAGE_MAX_PIXELS (1LL << 28)

/** torchvision's RandomResizedCrop defaults: scale (0.08, 1.0), ratio (3/4, 4/3). */
#define TDM_IMAGE_RRC_SCALE_MIN 0.08
#define TDM_IMAGE_RRC_SCALE_MAX 1.0
#define TDM_IMAGE_RRC_RATIO_MIN (3.0 / 4.0)
#define TDM_IMAGE_RRC_RATIO_MAX (4.0 / 3.0)

/** ImageNet's per-channel mean and standard deviation (RGB), as torchvision's examples use,
 *  for initialisers: `const float mean[3] = TDM_IMAGE_IMAGENET_MEAN;`. */
#define TDM_IMAGE_IMAGENET_MEAN                                                                    \
    {                                                                                              \
        0.485f, 0.456f, 0.406f                                                                     \
    }
#define TDM_IMAGE_IMAGENET_STD                                                                     \
    {                                                                                              \
        0.229f, 0.224f, 0.225f                                                                     \
    }

/* ---- JPEG decoding -------------------------------------------------------------------------- */

/** Decoder flags (bitwise or; 0 = strict, accurate). */
enum {
    /** Accept JPEG data that libjpeg decodes with a "Corrupt JPEG data" warning (extraneous
     *  bytes before a marker, a bad Huffman code, ...: the picture may have garbled blocks), as
     *  PIL does; tdm_image_info.warnings counts them. A truncated file ("Premature end of JPEG
     *  file") stays an error. Without this flag every libjpeg warning is TDM_EFORMAT. */
    TDM_IMAGE_JPEG_LENIENT = 1u << 0,
    /** Faster, slightly less accurate decoding: libjpeg's fast integer IDCT (JDCT_IFAST) and
     *  plain chroma upsampling instead of the fancy (triangle) filter. Pixels then differ from
     *  PIL's by a few levels. */
    TDM_IMAGE_JPEG_FAST = 1u << 1,
};

/** What the decoder found in (or made of) a JPEG file. */
typedef struct tdm_image_info {
    int width;          /**< of the decoded image, pixels */
    int height;         /**< of the decoded image, pixels */
    int channels;       /**< of the decoded image: always 3 (RGB) */
    int src_components; /**< in the file: 1 (grayscale), 3 (YCbCr or RGB), 4 (CMYK or YCCK) */
    size_t bytes;       /**< width * height * channels: the buffer the pixels need */
    int warnings;       /**< libjpeg warnings tolerated (LENIENT decoding, tdm_image_jpeg_info) */
} tdm_image_info;

TDM_BEGIN_DECLS

/** 1 if this build of tandem decodes JPEG (was built with libjpeg), else 0. Thread-safe. */
TDM_EXTERN int tdm_image_have_jpeg(void);

/** Reads only the header of the JPEG in data[0..size) and fills *info (width, height,
 *  channels = 3, src_components, bytes, warnings); nothing is decoded. Warnings about the
 *  header (extraneous bytes between segments) are counted in info->warnings, not errors:
 *  whether the whole file decodes is tdm_image_decode_jpeg()'s answer.
 *  Returns 0; TDM_EINVAL (data or info NULL); TDM_EFORMAT (empty, not a JPEG, header corrupt
 *  or truncated, zero or more than TDM_IMAGE_MAX_PIXELS pixels; the message is libjpeg's);
 *  TDM_ENODEV (built without libjpeg). Thread-safe. */
TDM_EXTERN int tdm_image_jpeg_info(const void *data, size_t size, tdm_image_info *info, char *err,
                                   size_t err_len);

/** Decodes the JPEG in data[0..size) into dst as RGB u8 HWC (rows packed: 3 * width bytes
 *  each). Grayscale files are expanded to RGB (R = G = B); CMYK and YCCK files (Adobe
 *  Photoshop's, inverted) are converted to RGB as PIL converts them (R = (255 - C) * (255 - K)
 *  / 255, rounded). The header is read first and info filled; if dst_cap < info->bytes nothing
 *  is decoded and TDM_ENOSPC is returned, with the needed size in info->bytes and in the
 *  message (so dst = NULL with dst_cap = 0 asks for the size). A truncated file and, unless
 *  `flags` has TDM_IMAGE_JPEG_LENIENT, any file libjpeg warns about are errors, not pictures
 *  with a grey tail.
 *  Returns 0; TDM_EINVAL (data or info NULL, dst NULL with dst_cap > 0, unknown flags);
 *  TDM_ENOSPC (dst too small: info->bytes says how much is needed); TDM_EFORMAT (empty, not a
 *  JPEG, corrupt or truncated, zero or more than TDM_IMAGE_MAX_PIXELS pixels, a colour space
 *  that cannot be converted to RGB; the message is libjpeg's); TDM_ENODEV (built without
 *  libjpeg). After an error other than TDM_ENOSPC the content of dst is unspecified.
 *  libjpeg's working memory is allocated and freed inside the call; dst is the caller's.
 *  Thread-safe (distinct dst). */
TDM_EXTERN int tdm_image_decode_jpeg(const void *data, size_t size, unsigned flags, uint8_t *dst,
                                     size_t dst_cap, tdm_image_info *info, char *err,
                                     size_t err_len);

/** tdm_image_decode_jpeg() on the file at `path`, streamed from the file (the file is not read
 *  into memory first).
 *  Returns what tdm_image_decode_jpeg() returns, and TDM_EINVAL for a NULL path, TDM_EIO when
 *  the file cannot be opened or read or is not a regular file (the message has the path and
 *  the system's reason). An empty file is TDM_EFORMAT. Thread-safe (distinct dst). */
TDM_EXTERN int tdm_image_read_jpeg(const char *path, unsigned flags, uint8_t *dst, size_t dst_cap,
                                   tdm_image_info *info, char *err, size_t err_len);

/* ---- random numbers ------------------------------------------------------------------------ */

/** A splitmix64 generator: 64 bits of state, owned by the caller (copy it freely; one per
 *  thread or per item: no locking anywhere). */
typedef struct tdm_rng {
    uint64_t state; /**< the generator's state: seed it with any value */
} tdm_rng;

/** A generator for (seed, stream): the same pair always gives the same sequence, on any
 *  machine. Different streams of one seed (e.g. the image index or the worker id) give
 *  unrelated sequences. Cannot fail. Thread-safe. */
TDM_EXTERN tdm_rng tdm_rng_seed(uint64_t seed, uint64_t stream);

/** The next 64 random bits (splitmix64). Returns 0 if rng is NULL. Thread-safe (distinct rng). */
TDM_EXTERN uint64_t tdm_rng_next(tdm_rng *rng);

/** The next double, uniform in [0, 1) with 53 random bits. Returns 0.0 if rng is NULL.
 *  Thread-safe (distinct rng). */
TDM_EXTERN double tdm_rng_uniform(tdm_rng *rng);

/* ---- RandomResizedCrop ---------------------------------------------------------------------- */

/** A rectangle of an image: columns x .. x + width - 1, rows y .. y + height - 1.
 *  (torchvision's crop parameters (i, j, h, w) are (y, x, height, width).) */
typedef struct tdm_image_crop {
    int x;      /**< first column */
    int y;      /**< first row */
    int width;  /**< columns */
    int height; /**< rows */
} tdm_image_crop;

/** torchvision's RandomResizedCrop.get_params for a width x height image: up to 10 tries of
 *  an area fraction uniform in [scale_min, scale_max] and an aspect ratio (w/h) log-uniform in
 *  [ratio_min, ratio_max], w = round(sqrt(area * ratio)), h = round(sqrt(area / ratio))
 *  (round half to even, as Python's round), accepted when 0 < w <= width and 0 < h <= height,
 *  then placed uniformly; if no try fits, the centre crop of the whole image clamped to the
 *  ratio range (torchvision's fallback; one difference: a side that would round to 0 there is
 *  1). The crop is always inside the image, width and height >= 1. Draws 2 numbers from rng
 *  per try and 2 more for the placement: the result depends only on rng's state and the
 *  arguments. Pass the TDM_IMAGE_RRC_* macros for torchvision's defaults.
 *  Returns 0 and *crop; TDM_EINVAL (rng or crop NULL, width or height <= 0, scale or ratio
 *  bounds not finite, <= 0 or min > max). Thread-safe (distinct rng). */
TDM_EXTERN int tdm_image_random_resized_crop_params(tdm_rng *rng, int width, int height,
                                                    double scale_min, double scale_max,
                                                    double ratio_min, double ratio_max,
                                                    tdm_image_crop *crop, char *err,
                                                    size_t err_len);

/* ---- resize and normalise ------------------------------------------------------------------ */

/** Resizes the region `crop` of src (width x height x channels, u8 HWC) to dst (dst_width x
 *  dst_height x channels, u8 HWC) by bilinear interpolation, mirrored left-right when `flip`
 *  is non-zero. Samples are taken at pixel centres (source x = (dx + 0.5) * crop.width /
 *  dst_width - 0.5, clamped to the crop's edge pixels), as torch's interpolate(mode=
 *  'bilinear', align_corners=False) and torchvision's resize with antialias=False: no
 *  low-pass filter when shrinking. Values are rounded to the nearest integer, half to even as
 *  torchvision does (against torch 1.13's, whose order of float operations differs, 0.02% of
 *  the values of 200 random crops of a photograph differ, by 1). Only pixels
 *  inside the crop are read. crop NULL = the whole image. src and dst must not overlap.
 *  Returns 0; TDM_EINVAL (src or dst NULL, a size <= 0, channels not 1..TDM_IMAGE_MAX_CHANNELS,
 *  crop empty or not inside the image); TDM_EOVERFLOW (sizes whose byte count overflows
 *  size_t). Thread-safe (distinct dst). */
TDM_EXTERN int tdm_image_resize_crop(const uint8_t *src, int width, int height, int channels,
                                     const tdm_image_crop *crop, uint8_t *dst, int dst_width,
                                     int dst_height, int flip, char *err, size_t err_len);

/** Converts src (width x height x channels, u8 HWC) to dst (channels x height x width, f32
 *  CHW): dst[c][y][x] = (src[y][x][c] / 255 - mean[c]) / std[c], computed in float in that
 *  order, so the values equal torchvision's ToTensor() then Normalize(mean, std) bit for bit.
 *  mean NULL = all 0, std NULL = all 1 (ToTensor() alone).
 *  Returns 0; TDM_EINVAL (src or dst NULL, a size <= 0, channels not 1..TDM_IMAGE_MAX_CHANNELS,
 *  a mean not finite, a std zero or not finite); TDM_EOVERFLOW. Thread-safe (distinct dst). */
TDM_EXTERN int tdm_image_normalize_chw(const uint8_t *src, int width, int height, int channels,
                                       const float *mean, const float *std, float *dst, char *err,
                                       size_t err_len);

TDM_END_DECLS

#endif
