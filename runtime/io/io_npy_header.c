/* SPDX-License-Identifier: MIT */
/* .npy files (NumPy's format, versions 1.0 to 3.0): the header, parsed and formatted.
 *
 * The header is a Python dict literal; only what numpy.save writes is accepted (the keys
 * 'descr', 'fortran_order', 'shape', each once), parsed by hand with every length checked, so
 * a hostile header cannot make the parser read past the bytes it was given. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_internal.h"

#define PREFIX_V1 10u /* magic(6) major minor len(2) */
#define PREFIX_V2 12u /* magic(6) major minor len(4) */
#define ALIGN 64u

/* ---- parsing ------------------------------------------------------------------------------- */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted string without escapes (numpy never writes any in these fields). */
static bool parse_str(cursor *c, const char **s, size_t *n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char q = *c->p++;
    const char *b = c->p;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\')
            return false;
        c->p++;
    }
    if (c->p >= c->end)
        return false;
    *s = b;
    *n = (size_t)(c->p - b);
    c->p++;
    return true;
}

static bool parse_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* Non-negative decimal, optional Python 2 'L' suffix; false on overflow. */
static bool parse_int(cursor *c, int64_t *v)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return false;
    int64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (tdm__mul_ovf(x, 10, &x) || tdm__add_ovf(x, *c->p - '0', &x))
            return false;
        c->p++;
    }
    if (c->p < c->end && *c->p == 'L')
        c->p++;
    *v = x;
    return true;
}

static int fail(char *msg, size_t len, int code, const char *fmt, ...) TDM__PRINTF(4, 5);
static int fail(char *msg, size_t len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return code;
}

static int parse_descr(const char *s, size_t n, tdm__npy_header *h, char *msg, size_t mlen)
{
    char txt[32];
    snprintf(txt, sizeof txt, "%.*s", (int)(n < 24 ? n : 24), s);
    if (n < 2 || n > 8)
        return fail(msg, mlen, TDM_EDTYPE, "unsupported dtype '%s'", txt);
    char bo = '=';
    if (strchr("<>|=", s[0])) {
        bo = s[0];
        s++;
        n--;
    }
    char kind = s[0];
    int64_t size = 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(msg, mlen, TDM_EDTYPE, "unsupported dtype '%s'", txt);
        size = size * 10 + (s[i] - '0');
    }
    static const struct {
        char kind;
        int size;
        tdm_dtype dt;
    } k_types[] = {
        {'u', 1, TDM_U8},   {'u', 2, TDM_U16}, {'u', 4, TDM_U32}, {'u', 8, TDM_U64},
        {'i', 1, TDM_I8},   {'i', 2, TDM_I16}, {'i', 4, TDM_I32}, {'i', 8, TDM_I64},
        {'f', 2, TDM_F16},  {'f', 4, TDM_F32}, {'f', 8, TDM_F64}, {'b', 1, TDM_BOOL},
        {'V', 2, TDM_BF16},
    };
    int dt = -1;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0] && dt < 0; i++)
        if (kind == k_types[i].kind && size == k_types[i].size)
            dt = (int)k_types[i].dt;
    if (dt < 0)
        return fail(msg, mlen, TDM_EDTYPE,
                    "dtype '%s' has no tandem equivalent (b1 u1 u2 u4 u8 i1 i2 i4 i8 f2 f4 f8, V2 "
                    "as bf16)",
                    txt);
    h->dtype = (tdm_dtype)dt;
    h->big_endian = bo == '>' && size > 1 && kind != 'V';
    return 0;
}

/* Total header length from the fixed prefix: 0 and *total, or TDM_EFORMAT. */
static int header_total(const unsigned char *b, size_t avail, int *version, uint64_t *total,
                        char *msg, size_t mlen)
{
    if (avail < 8 || memcmp(b, "\x93NUMPY", 6) != 0)
        return fail(msg, mlen, TDM_EFORMAT, "not a .npy file (wrong magic)");
    if (b[7] != 0 || b[6] < 1 || b[6] > 3)
        return fail(msg, mlen, TDM_EFORMAT, "unsupported .npy format version %u.%u", b[6], b[7]);
    *version = b[6];
    size_t pre = b[6] == 1 ? PREFIX_V1 : PREFIX_V2;
    if (avail < pre)
        return fail(msg, mlen, TDM_EFORMAT, "truncated in the header length");
    uint64_t hl = b[6] == 1 ? tdm__get_u16(b + 8) : tdm__get_u32(b + 8);
    *total = pre + hl;
    if (*total > TDM__NPY_PREFIX_MAX)
        return fail(msg, mlen, TDM_EFORMAT, "header of %llu bytes is longer than the 1 MiB allowed",
                    (unsigned long long)hl);
    return 0;
}

int tdm__npy_parse(const unsigned char *buf, size_t avail, uint64_t region_bytes,
                   tdm__npy_header *h, char *msg, size_t mlen)
{
    memset(h, 0, sizeof *h);
    uint64_t total;
    int rc = header_total(buf, avail, &h->version, &total, msg, mlen);
    if (rc != 0)
        return rc;
    if (total > avail || total > region_bytes)
        return fail(msg, mlen, TDM_EFORMAT,
                    "truncated: the header needs %llu bytes, there are %llu",
                    (unsigned long long)total,
                    (unsigned long long)(region_bytes < avail ? region_bytes : avail));
    size_t pre = h->version == 1 ? PREFIX_V1 : PREFIX_V2;
    cursor c = {(const char *)buf + pre, (const char *)buf + total};
    bool have_descr = false, have_order = false, have_shape = false;
    if (!eat(&c, '{'))
        return fail(msg, mlen, TDM_EFORMAT, "the header is not a dict literal");
    while (!eat(&c, '}')) {
        const char *k;
        size_t kn;
        if (!parse_str(&c, &k, &kn) || !eat(&c, ':'))
            return fail(msg, mlen, TDM_EFORMAT, "malformed header dict");
        if (kn == 5 && memcmp(k, "descr", 5) == 0 && !have_descr) {
            const char *d;
            size_t dn;
            if (!parse_str(&c, &d, &dn))
                return fail(msg, mlen, TDM_EDTYPE,
                            "structured or non-string dtype descr: not supported");
            rc = parse_descr(d, dn, h, msg, mlen);
            if (rc != 0)
                return rc;
            have_descr = true;
        } else if (kn == 13 && memcmp(k, "fortran_order", 13) == 0 && !have_order) {
            if (parse_word(&c, "True"))
                h->fortran = true;
            else if (parse_word(&c, "False"))
                h->fortran = false;
            else
                return fail(msg, mlen, TDM_EFORMAT, "fortran_order is not True or False");
            have_order = true;
        } else if (kn == 5 && memcmp(k, "shape", 5) == 0 && !have_shape) {
            if (!eat(&c, '('))
                return fail(msg, mlen, TDM_EFORMAT, "shape is not a tuple");
            while (!eat(&c, ')')) {
                int64_t v;
                if (!parse_int(&c, &v))
                    return fail(msg, mlen, TDM_EFORMAT,
                                "shape holds a non-integer or too large "
                                "dimension");
                if (h->ndim == TDM_MAX_DIMS)
                    return fail(msg, mlen, TDM_ESHAPE, "more than %d dimensions", TDM_MAX_DIMS);
                h->shape[h->ndim++] = v;
                if (!eat(&c, ',')) {
                    if (!eat(&c, ')'))
                        return fail(msg, mlen, TDM_EFORMAT, "malformed shape tuple");
                    break;
                }
            }
            have_shape = true;
        } else {
            return fail(msg, mlen, TDM_EFORMAT, "unexpected or repeated key '%.*s' in the header",
                        (int)(kn < 32 ? kn : 32), k);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return fail(msg, mlen, TDM_EFORMAT, "malformed header dict");
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape)
        return fail(msg, mlen, TDM_EFORMAT, "the header lacks '%s'",
                    !have_descr   ? "descr"
                    : !have_order ? "fortran_order"
                                  : "shape");
    int64_t numel, bytes;
    if (tdm__shape_numel(h->ndim, h->shape, &numel) != 0 ||
        tdm__mul_ovf(numel, (int64_t)tdm_dtype_size(h->dtype), &bytes))
        return fail(msg, mlen, TDM_EFORMAT, "the shape's byte size overflows");
    h->data_offset = total;
    h->data_bytes = (uint64_t)bytes;
    if (h->data_bytes > region_bytes - total)
        return fail(msg, mlen, TDM_EFORMAT,
                    "truncated: the header says %llu bytes of data, the file holds %llu after "
                    "the header",
                    (unsigned long long)h->data_bytes, (unsigned long long)(region_bytes - total));
    return 0;
}

int tdm__npy_read_header(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                         uint64_t len, tdm__npy_header *h)
{
    unsigned char pre[PREFIX_V2];
    size_t n = len < sizeof pre ? (size_t)len : sizeof pre;
    int rc = tdm__io_pread(rt, who, path, fd, pre, n, off, "the .npy header");
    if (rc != 0)
        return rc;
    char msg[256];
    int version;
    uint64_t total;
    rc = header_total(pre, n, &version, &total, msg, sizeof msg);
    if (rc != 0)
        return tdm__err(rt, rc, "%s: '%s': %s", who, path, msg);
    if (total > len)
        return tdm__err(rt, TDM_EFORMAT,
                        "%s: '%s' is truncated: the .npy header needs %llu bytes, there are %llu",
                        who, path, (unsigned long long)total, (unsigned long long)len);
    unsigned char *buf = malloc((size_t)total);
    if (!buf)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory for a header of %llu bytes", who,
                        (unsigned long long)total);
    rc = tdm__io_pread(rt, who, path, fd, buf, (size_t)total, off, "the .npy header");
    if (rc == 0) {
        rc = tdm__npy_parse(buf, (size_t)total, len, h, msg, sizeof msg);
        if (rc != 0)
            rc = tdm__err(rt, rc, "%s: '%s': %s", who, path, msg);
    }
    free(buf);
    return rc;
}

/* ---- formatting ---------------------------------------------------------------------------- */

static const char *descr_of(tdm_dtype dt)
{
    switch (dt) {
    case TDM_U8:
        return "|u1";
    case TDM_I32:
        return "<i4";
    case TDM_I64:
        return "<i8";
    case TDM_F32:
        return "<f4";
    case TDM_F64:
        return "<f8";
    case TDM_F16:
        return "<f2";
    case TDM_BF16:
        return "<V2";
    case TDM_BOOL:
        return "|b1";
    case TDM_I8:
        return "|i1";
    case TDM_I16:
        return "<i2";
    case TDM_U16:
        return "<u2";
    case TDM_U32:
        return "<u4";
    case TDM_U64:
        return "<u8";
    default:
        return NULL;
    }
}

int tdm__npy_format(tdm_dtype dtype, int ndim, const int64_t *shape, bool fortran, int version,
                    size_t min_len, unsigned char *buf, size_t cap, size_t *len)
{
    const char *descr = descr_of(dtype);
    if (!descr || ndim < 0 || ndim > TDM_MAX_DIMS || version < 0 || version > 3)
        return TDM_EINVAL;
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': (", descr,
                     fortran ? "True" : "False");
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                      (long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    size_t pre = version == 0 || version == 1 ? PREFIX_V1 : PREFIX_V2;
    size_t total = pre + (size_t)n + 1; /* + '\n' */
    if (total < min_len)
        total = min_len;
    total = (total + ALIGN - 1) / ALIGN * ALIGN;
    if (version == 0 && total - PREFIX_V1 > 0xffff) {
        version = 2;
        pre = PREFIX_V2;
        total = (pre + (size_t)n + 1 + ALIGN - 1) / ALIGN * ALIGN;
    }
    if (version == 0)
        version = 1;
    if (version == 1 && total - pre > 0xffff)
        return TDM_EOVERFLOW;
    if (total > cap)
        return TDM_EOVERFLOW;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version;
    buf[7] = 0;
    if (version == 1)
        tdm__put_u16(buf + 8, (uint16_t)(total - pre));
    else
        tdm__put_u32(buf + 8, (uint32_t)(total - pre));
    memcpy(buf + pre, dict, (size_t)n);
    memset(buf + pre + n, ' ', total - pre - (size_t)n - 1);
    buf[total - 1] = '\n';
    *len = total;
    return 0;
}
