/* SPDX-License-Identifier: MIT */
/* Image operations for input pipelines (tandem/image.h): the splitmix64 generator,
 * torchvision's RandomResizedCrop parameters, the bilinear crop-resize with flip, and u8 HWC
 * -> normalised f32 CHW. Pure C on caller buffers: no allocation, no global state. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tandem/image.h"
#include "internal.h"

static int ok(char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    return 0;
}

/* width * height * channels without overflow: false if it does not fit in size_t. */
static bool image_bytes(int width, int height, int channels, size_t *out)
{
    size_t w = (size_t)width, h = (size_t)height, c = (size_t)channels;
    if (h && w > SIZE_MAX / h)
        return false;
    if (c && w * h > SIZE_MAX / c)
        return false;
    *out = w * h * c;
    return true;
}

/* ---- splitmix64 ---------------------------------------------------------------------------- */

#define GOLDEN 0x9E3779B97F4A7C15ull

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* mix64 is a bijection, so for one seed distinct streams start from distinct states (and for
 * one stream, distinct seeds); the second mix decorrelates neighbouring streams. */
tdm_rng tdm_rng_seed(uint64_t seed, uint64_t stream)
{
    tdm_rng r;
    r.state = mix64(mix64(seed + GOLDEN) + stream);
    return r;
}

uint64_t tdm_rng_next(tdm_rng *rng)
{
    if (!rng)
        return 0;
    rng->state += GOLDEN;
    return mix64(rng->state);
}

double tdm_rng_uniform(tdm_rng *rng)
{
    if (!rng)
        return 0.0;
    return (double)(tdm_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* torch.randint(0, n): an integer uniform in [0, n). */
static int rng_below(tdm_rng *rng, int n)
{
    int v = (int)(tdm_rng_uniform(rng) * (double)n);
    return v < n ? v : n - 1;
}

/* ---- RandomResizedCrop ------------------------------------------------------------------- */

static bool bad_range(double lo, double hi)
{
    return !isfinite(lo) || !isfinite(hi) || lo <= 0.0 || lo > hi;
}

int tdm_image_random_resized_crop_params(tdm_rng *rng, int width, int height, double scale_min,
                                         double scale_max, double ratio_min, double ratio_max,
                                         tdm_image_crop *crop, char *err, size_t err_len)
{
    static const char who[] = "tdm_image_random_resized_crop_params";
    if (!rng || !crop)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: %s is NULL", who, rng ? "crop" : "rng");
    if (width <= 0 || height <= 0)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: image size %dx%d (must be > 0)", who, width,
                    height);
    if (bad_range(scale_min, scale_max))
        return tdm__msg(err, err_len, TDM_EINVAL,
                    "%s: scale (%g, %g): bounds must be finite, > 0 and min <= max", who, scale_min,
                    scale_max);
    if (bad_range(ratio_min, ratio_max))
        return tdm__msg(err, err_len, TDM_EINVAL,
                    "%s: ratio (%g, %g): bounds must be finite, > 0 and min <= max", who, ratio_min,
                    ratio_max);

    double area = (double)width * (double)height;
    double log_lo = log(ratio_min), log_hi = log(ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target_area = area * (scale_min + (scale_max - scale_min) * tdm_rng_uniform(rng));
        double aspect = exp(log_lo + (log_hi - log_lo) * tdm_rng_uniform(rng));
        /* Python's round() is round-half-to-even: nearbyint in the default rounding mode. */
        double w = nearbyint(sqrt(target_area * aspect));
        double h = nearbyint(sqrt(target_area / aspect));
        if (w > 0.0 && w <= (double)width && h > 0.0 && h <= (double)height) {
            crop->width = (int)w;
            crop->height = (int)h;
            crop->y = rng_below(rng, height - crop->height + 1);
            crop->x = rng_below(rng, width - crop->width + 1);
            return ok(err, err_len);
        }
    }

    /* torchvision's fallback: the centre crop, as large as the ratio range allows. */
    double in_ratio = (double)width / (double)height;
    int w = width, h = height;
    if (in_ratio < ratio_min) {
        double hh = nearbyint((double)w / ratio_min);
        h = hh < 1.0 ? 1 : hh > (double)height ? height : (int)hh;
    } else if (in_ratio > ratio_max) {
        double ww = nearbyint((double)h * ratio_max);
        w = ww < 1.0 ? 1 : ww > (double)width ? width : (int)ww;
    }
    crop->width = w;
    crop->height = h;
    crop->y = (height - h) / 2;
    crop->x = (width - w) / 2;
    return ok(err, err_len);
}

/* ---- bilinear crop-resize ------------------------------------------------------------------ */

/* Destination columns are processed in tiles whose horizontal taps (left source column and
 * weight) are computed once per tile, on the stack: no allocation whatever the width. */
#define TILE 512

/* Rounds half to even, as torch.round does before torchvision casts back to u8: adding and
 * subtracting 1.5 * 2^23 leaves the float rounded to an integer in the default rounding mode
 * (cheaper than nearbyintf, which is a libm call without SSE4.1). */
static inline uint8_t to_u8(float v)
{
    /* v is a convex combination of u8 values: within [0, 255] up to rounding. */
    float r = (v + 0x1.8p23f) - 0x1.8p23f;
    return (uint8_t)(r < 0.0f ? 0 : r > 255.0f ? 255 : (int)r);
}

/* The source coordinate (within a crop of n pixels) sampled for destination index d of m:
 * pixel centres aligned, clamped as torch's area_pixel_compute_source_index (linear modes). */
static inline void tap(int d, int m, int n, int *i0, int *i1, float *frac)
{
    float scale = (float)n / (float)m;
    float s = ((float)d + 0.5f) * scale - 0.5f;
    if (s < 0.0f)
        s = 0.0f;
    int i = (int)s;
    if (i > n - 1)
        i = n - 1;
    *i0 = i;
    *i1 = i < n - 1 ? i + 1 : i;
    *frac = s - (float)i;
    if (*i1 == i)
        *frac = 0.0f;
}

int tdm_image_resize_crop(const uint8_t *src, int width, int height, int channels,
                          const tdm_image_crop *crop, uint8_t *dst, int dst_width, int dst_height,
                          int flip, char *err, size_t err_len)
{
    static const char who[] = "tdm_image_resize_crop";
    if (!src || !dst)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: %s is NULL", who, src ? "dst" : "src");
    if (width <= 0 || height <= 0 || dst_width <= 0 || dst_height <= 0)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: sizes %dx%d -> %dx%d (must be > 0)", who, width,
                    height, dst_width, dst_height);
    if (channels < 1 || channels > TDM_IMAGE_MAX_CHANNELS)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: %d channels (must be 1..%d)", who, channels,
                    TDM_IMAGE_MAX_CHANNELS);
    tdm_image_crop c = {0, 0, width, height};
    if (crop)
        c = *crop;
    if (c.width <= 0 || c.height <= 0 || c.x < 0 || c.y < 0 || c.x > width - c.width ||
        c.y > height - c.height)
        return tdm__msg(err, err_len, TDM_EINVAL,
                    "%s: crop %dx%d at (%d, %d) is empty or not inside the %dx%d image", who,
                    c.width, c.height, c.x, c.y, width, height);
    size_t sbytes, dbytes;
    if (!image_bytes(width, height, channels, &sbytes) ||
        !image_bytes(dst_width, dst_height, channels, &dbytes))
        return tdm__msg(err, err_len, TDM_EOVERFLOW, "%s: image sizes overflow size_t", who);

    const size_t ch = (size_t)channels;
    const size_t sstride = (size_t)width * ch, dstride = (size_t)dst_width * ch;
    const uint8_t *base = src + (size_t)c.y * sstride + (size_t)c.x * ch;
    int x0s[TILE];
    float fxs[TILE];
    unsigned char x1off[TILE]; /* 0 at the crop's right edge, else 1 */

    for (int t0 = 0; t0 < dst_width; t0 += TILE) {
        int tn = dst_width - t0 < TILE ? dst_width - t0 : TILE;
        for (int k = 0; k < tn; k++) {
            /* With flip, destination column d shows the column dst_width - 1 - d would. */
            int d = t0 + k;
            int sd = flip ? dst_width - 1 - d : d;
            int i0, i1;
            tap(sd, dst_width, c.width, &i0, &i1, &fxs[k]);
            x0s[k] = i0;
            x1off[k] = (unsigned char)(i1 - i0);
        }
        for (int dy = 0; dy < dst_height; dy++) {
            int y0, y1;
            float fy;
            tap(dy, dst_height, c.height, &y0, &y1, &fy);
            const uint8_t *r0 = base + (size_t)y0 * sstride;
            const uint8_t *r1 = base + (size_t)y1 * sstride;
            uint8_t *out = dst + (size_t)dy * dstride + (size_t)t0 * ch;
            float gy = 1.0f - fy;
            if (channels == 3) {
                for (int k = 0; k < tn; k++) {
                    size_t a = (size_t)x0s[k] * 3, b = a + (size_t)x1off[k] * 3;
                    float fx = fxs[k], gx = 1.0f - fx;
                    for (int q = 0; q < 3; q++) {
                        float top = gx * (float)r0[a + q] + fx * (float)r0[b + q];
                        float bot = gx * (float)r1[a + q] + fx * (float)r1[b + q];
                        out[q] = to_u8(gy * top + fy * bot);
                    }
                    out += 3;
                }
            } else {
                for (int k = 0; k < tn; k++) {
                    size_t a = (size_t)x0s[k] * ch, b = a + (size_t)x1off[k] * ch;
                    float fx = fxs[k], gx = 1.0f - fx;
                    for (size_t q = 0; q < ch; q++) {
                        float top = gx * (float)r0[a + q] + fx * (float)r0[b + q];
                        float bot = gx * (float)r1[a + q] + fx * (float)r1[b + q];
                        out[q] = to_u8(gy * top + fy * bot);
                    }
                    out += ch;
                }
            }
        }
    }
    return ok(err, err_len);
}

/* ---- u8 HWC -> f32 CHW -------------------------------------------------------------------- */

int tdm_image_normalize_chw(const uint8_t *src, int width, int height, int channels,
                            const float *mean, const float *std, float *dst, char *err,
                            size_t err_len)
{
    static const char who[] = "tdm_image_normalize_chw";
    if (!src || !dst)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: %s is NULL", who, src ? "dst" : "src");
    if (width <= 0 || height <= 0)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: size %dx%d (must be > 0)", who, width, height);
    if (channels < 1 || channels > TDM_IMAGE_MAX_CHANNELS)
        return tdm__msg(err, err_len, TDM_EINVAL, "%s: %d channels (must be 1..%d)", who, channels,
                    TDM_IMAGE_MAX_CHANNELS);
    for (int c = 0; c < channels; c++) {
        if (mean && !isfinite(mean[c]))
            return tdm__msg(err, err_len, TDM_EINVAL, "%s: mean[%d] = %g is not finite", who, c,
                        (double)mean[c]);
        if (std && (!isfinite(std[c]) || std[c] == 0.0f))
            return tdm__msg(err, err_len, TDM_EINVAL, "%s: std[%d] = %g (must be finite, non-zero)",
                        who, c, (double)std[c]);
    }
    size_t bytes;
    if (!image_bytes(width, height, channels, &bytes) || bytes > SIZE_MAX / sizeof(float))
        return tdm__msg(err, err_len, TDM_EOVERFLOW, "%s: image size overflows size_t", who);

    /* A table per channel of the 256 results, each computed exactly as ToTensor + Normalize
     * do (float: x / 255, then - mean, then / std): the loop below is a gather. */
    float lut[TDM_IMAGE_MAX_CHANNELS][256];
    for (int c = 0; c < channels; c++) {
        float m = mean ? mean[c] : 0.0f, s = std ? std[c] : 1.0f;
        for (int v = 0; v < 256; v++) {
            float x = (float)v / 255.0f;
            lut[c][v] = (x - m) / s;
        }
    }
    const size_t plane = (size_t)width * (size_t)height, ch = (size_t)channels;
    if (channels == 3) {
        float *d0 = dst, *d1 = dst + plane, *d2 = dst + 2 * plane;
        for (size_t i = 0; i < plane; i++) {
            d0[i] = lut[0][src[3 * i]];
            d1[i] = lut[1][src[3 * i + 1]];
            d2[i] = lut[2][src[3 * i + 2]];
        }
    } else {
        for (size_t c = 0; c < ch; c++) {
            float *d = dst + c * plane;
            for (size_t i = 0; i < plane; i++)
                d[i] = lut[c][src[i * ch + c]];
        }
    }
    return ok(err, err_len);
}
