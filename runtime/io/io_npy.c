/* .npy files (NumPy's format, versions 1.0 to 3.0): header parsing and formatting, loading
 * (read or memory-mapped) and the element stream a writer emits.
 *
 * The header is a Python dict literal; only what numpy.save writes is accepted (the keys
 * 'descr', 'fortran_order', 'shape', each once), parsed by hand with every length checked, so
 * a hostile header cannot make the parser read past the bytes it was given. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "io/io_internal.h"
#include "core/core.h"

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
    int dt = -1;
    if (kind == 'u' && size == 1)
        dt = TDM_U8;
    else if (kind == 'i' && size == 4)
        dt = TDM_I32;
    else if (kind == 'i' && size == 8)
        dt = TDM_I64;
    else if (kind == 'f' && size == 2)
        dt = TDM_F16;
    else if (kind == 'f' && size == 4)
        dt = TDM_F32;
    else if (kind == 'f' && size == 8)
        dt = TDM_F64;
    else if (kind == 'V' && size == 2)
        dt = TDM_BF16;
    if (dt < 0)
        return fail(msg, mlen, TDM_EDTYPE,
                    "dtype '%s' has no tandem equivalent (u1 i4 i8 f2 f4 f8, V2 as bf16)", txt);
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

/* ---- writing elements ---------------------------------------------------------------------- */

int tdm__io_fdsink_write(void *ctx, const void *p, size_t n)
{
    tdm__io_fdsink *s = ctx;
    int rc = tdm__io_pwrite(s->rt, s->who, s->path, s->fd, p, n, s->off);
    if (rc == 0)
        s->off += n;
    return rc;
}

#define GATHER_BYTES (1u << 20)

int tdm__io_emit_elements(tdm_runtime *rt, const char *who, const tdm_tensor *t, tdm__io_sink sink,
                          void *ctx)
{
    size_t es = tdm_dtype_size(t->dtype);
    int64_t numel = tdm_tensor_numel(t);
    if (numel == 0)
        return 0;
    const char *data = tdm_tensor_data(t);
    if (tdm_tensor_is_contiguous(t) || tdm__io_is_fortran(t)) {
        size_t total = (size_t)numel * es, done = 0;
        while (done < total) {
            size_t step = total - done > (64u << 20) ? (64u << 20) : total - done;
            int rc = sink(ctx, data + done, step);
            if (rc != 0)
                return rc;
            done += step;
        }
        return 0;
    }
    /* Any other layout: C order, gathered through a bounded buffer. */
    char *buf = malloc(GATHER_BYTES);
    if (!buf)
        return tdm__err(rt, TDM_ENOMEM, "%s: out of memory for a gather buffer", who);
    int ndim = t->ndim, last = ndim - 1;
    int64_t idx[TDM_MAX_DIMS] = {0};
    size_t fill = 0;
    int rc = 0;
    for (;;) {
        int64_t off = 0;
        for (int i = 0; i < last; i++)
            off += idx[i] * t->strides[i];
        for (int64_t j = 0; j < t->shape[last]; j++) {
            if (fill + es > GATHER_BYTES) {
                rc = sink(ctx, buf, fill);
                if (rc != 0)
                    goto out;
                fill = 0;
            }
            memcpy(buf + fill, data + (off + j * t->strides[last]) * (int64_t)es, es);
            fill += es;
        }
        int i = last - 1;
        while (i >= 0 && ++idx[i] == t->shape[i])
            idx[i--] = 0;
        if (i < 0)
            break;
    }
    if (fill > 0)
        rc = sink(ctx, buf, fill);
out:
    free(buf);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------- */

int tdm__io_check_dst(tdm_runtime *rt, const char *who, const tdm_tensor *dst, tdm_dtype dtype,
                      int ndim, const int64_t *shape, bool fortran)
{
    if (dst->dtype != dtype)
        return tdm__err(rt, TDM_EDTYPE, "%s: the file holds %s, the tensor is %s", who,
                        tdm_dtype_name(dtype), tdm_dtype_name(dst->dtype));
    bool same = dst->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = dst->shape[i] == shape[i];
    if (!same)
        return tdm__err(rt, TDM_ESHAPE, "%s: the file's shape (%d dims) differs from the tensor's",
                        who, ndim);
    if (tdm_tensor_numel(dst) == 0)
        return 0;
    int64_t want[TDM_MAX_DIMS];
    if (fortran) {
        tdm__io_fortran_strides(ndim, shape, want);
    } else {
        int64_t st = 1;
        for (int i = ndim - 1; i >= 0; i--) {
            want[i] = st;
            st *= shape[i] > 0 ? shape[i] : 1;
        }
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] > 1 && dst->strides[i] != want[i])
            return tdm__err(rt, TDM_ELAYOUT, "%s: the tensor's strides are not the file's %s order",
                            who, fortran ? "Fortran (column-major)" : "C (row-major)");
    return 0;
}

/* ---- reading the data: in steps, on several threads when it is large ----------------------
 *
 * A load into new memory costs, per byte, a first touch of the destination (the kernel zeroes
 * each fresh page: a huge page at a time for tensors on THP) and a copy out of the page cache;
 * both run in the reading thread, at about 6 GB/s per core, whatever the size of the reads. So a
 * large read is split into steps that a few threads take in turn from a shared counter (the
 * file is still read front to back, two or three steps in flight, as readahead likes). Plain
 * threads made for the call, not the runtime's pool: a load may run inside a pool task (a
 * parallel_for over files), where waiting on the pool could deadlock. A thread costs ~50 us,
 * so only reads of PAR_MIN_BYTES or more are split, over at most tdm_runtime_threads(rt)
 * threads. */

#define READ_STEP (8u << 20)
#define PAR_MIN_BYTES (32u << 20)
#define MAX_READERS 8

typedef struct reader {
    int fd;
    char *dst; /* receives bytes [off, off + n) of the file */
    uint64_t n, off;
    uint64_t n_steps; /* of READ_STEP bytes, the last one shorter */
    size_t swap_es;   /* byteswap elements of this size after the read (and the CRC); 0 = no */
    uint32_t *crcs;   /* per step, when the caller wants the CRC-32 */
    atomic_uint_least64_t next;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards the failure record */
    int err;              /* 0, TDM_EIO (err_errno), TDM_EFORMAT (the file ended at err_off) */
    int err_errno;
    uint64_t err_off; /* the lowest failing offset */
} reader;

static void reader_fail(reader *r, int code, int e, uint64_t off)
{
    pthread_mutex_lock(&r->lock);
    if (r->err == 0 || off < r->err_off) {
        r->err = code;
        r->err_errno = e;
        r->err_off = off;
    }
    pthread_mutex_unlock(&r->lock);
    atomic_store(&r->stop, true);
}

static void reader_run(reader *r)
{
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        uint64_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n_steps)
            return;
        uint64_t at = i * READ_STEP;
        size_t len = r->n - at > READ_STEP ? READ_STEP : (size_t)(r->n - at);
        char *p = r->dst + at;
        uint64_t off = r->off + at;
        size_t left = len;
        while (left > 0) {
            ssize_t got = pread(r->fd, p, left, (off_t)off);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                reader_fail(r, got < 0 ? TDM_EIO : TDM_EFORMAT, got < 0 ? errno : 0, off);
                return;
            }
            p += got;
            off += (uint64_t)got;
            left -= (size_t)got;
        }
        if (r->crcs)
            r->crcs[i] = (uint32_t)crc32_z(0L, (const Bytef *)(r->dst + at), len);
        if (r->swap_es > 1)
            tdm__io_byteswap(r->dst + at, len / r->swap_es, r->swap_es);
    }
}

static void *reader_main(void *arg)
{
    reader_run(arg);
    return NULL;
}

/* Reads n bytes at off into p; byteswaps elements of swap_es bytes (0 or 1: none); updates
 * *crc (the CRC-32 of the bytes as read) when given. */
static int read_data(tdm_runtime *rt, const char *who, const char *path, int fd, char *p,
                     uint64_t n, uint64_t off, size_t swap_es, uLong *crc)
{
    if (n == 0)
        return 0;
    reader r = {.fd = fd, .dst = p, .n = n, .off = off, .swap_es = swap_es};
    r.n_steps = (n + READ_STEP - 1) / READ_STEP;
    atomic_init(&r.next, 0);
    atomic_init(&r.stop, false);
    if (crc) {
        r.crcs = malloc((size_t)r.n_steps * sizeof *r.crcs);
        if (!r.crcs)
            return tdm__err(rt, TDM_ENOMEM, "%s: out of memory", who);
    }
    pthread_mutex_init(&r.lock, NULL);
    int want = 1;
    if (n >= PAR_MIN_BYTES) {
        want = tdm_runtime_threads(rt);
        if (want > MAX_READERS)
            want = MAX_READERS;
        if ((uint64_t)want > r.n_steps)
            want = (int)r.n_steps;
    }
    pthread_t th[MAX_READERS];
    int started = 0;
    if (want > 1) {
        /* the helpers take no signals: they are the process's to handle where it chose */
        sigset_t all, old;
        sigfillset(&all);
        bool masked = pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
        for (int i = 1; i < want; i++) {
            if (pthread_create(&th[started], NULL, reader_main, &r) != 0)
                break; /* fewer threads: the others take the steps */
            started++;
        }
        if (masked)
            pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    reader_run(&r);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&r.lock);
    int rc = 0;
    if (r.err == TDM_EIO)
        rc = tdm__err(rt, TDM_EIO, "%s: read of '%s' failed at offset %llu (%s)", who, path,
                      (unsigned long long)r.err_off, strerror(r.err_errno));
    else if (r.err != 0)
        rc = tdm__err(rt, TDM_EFORMAT, "%s: '%s' is truncated: it ends at offset %llu, in %s", who,
                      path, (unsigned long long)r.err_off, "the data");
    else if (crc)
        for (uint64_t i = 0; i < r.n_steps; i++) {
            uint64_t at = i * READ_STEP;
            uint64_t len = n - at > READ_STEP ? READ_STEP : n - at;
            *crc = crc32_combine(*crc, r.crcs[i], (z_off_t)len);
        }
    free(r.crcs);
    return rc;
}

static int load_mapped(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                       const tdm__npy_header *h, const tdm_load_opts *o, tdm_tensor **out)
{
    size_t es = tdm_dtype_size(h->dtype);
    if (h->big_endian)
        return tdm__err(rt, TDM_ELAYOUT,
                        "%s: '%s' holds big-endian data, which cannot be memory-mapped (load it "
                        "without a mmap mode to have it swapped)",
                        who, path);
    uint64_t at = off + h->data_offset;
    if (at % es != 0)
        return tdm__err(rt, TDM_ELAYOUT,
                        "%s: the data of '%s' starts at offset %llu, not aligned to its %zu-byte "
                        "elements: it cannot be memory-mapped",
                        who, path, (unsigned long long)at, es);
    if (h->data_bytes > SIZE_MAX)
        return tdm__err(rt, TDM_EOVERFLOW, "%s: too large to map", who);
    int prot = PROT_READ, flags = MAP_SHARED;
    if (o->mmap == TDM_MMAP_READWRITE)
        prot |= PROT_WRITE;
    else if (o->mmap == TDM_MMAP_COPY) {
        prot |= PROT_WRITE;
        flags = MAP_PRIVATE;
    }
    int mfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mfd < 0)
        return tdm__err(rt, TDM_EIO, "%s: dup of the file descriptor failed (%s)", who,
                        strerror(errno));
    tdm__storage *s;
    int rc = tdm__storage_map_file(rt, mfd, at, (size_t)h->data_bytes, prot, flags, who, &s);
    if (rc != 0) {
        close(mfd);
        return rc;
    }
    int64_t st[TDM_MAX_DIMS];
    if (h->fortran)
        tdm__io_fortran_strides(h->ndim, h->shape, st);
    rc = tdm__tensor_over_storage(s, h->dtype, h->ndim, h->shape, h->fortran ? st : NULL, who, out);
    if (rc != 0)
        tdm__storage_release(s);
    return rc;
}

int tdm__npy_load_region(tdm_runtime *rt, const char *who, const char *path, int fd, uint64_t off,
                         uint64_t len, const tdm_load_opts *o, const uint32_t *crc, tdm_tensor *dst,
                         tdm_tensor **out)
{
    tdm__npy_header h;
    int rc = tdm__npy_read_header(rt, who, path, fd, off, len, &h);
    if (rc != 0)
        return rc;
    if (o->max_bytes > 0 && h.data_bytes > (uint64_t)o->max_bytes)
        return tdm__err(rt, TDM_EFORMAT,
                        "%s: '%s' holds %llu bytes of data, more than max_bytes %lld", who, path,
                        (unsigned long long)h.data_bytes, (long long)o->max_bytes);
    if (!dst && o->mmap != TDM_MMAP_NONE)
        return load_mapped(rt, who, path, fd, off, &h, o, out);
    tdm_tensor *t = dst;
    if (dst) {
        rc = tdm__io_check_dst(rt, who, dst, h.dtype, h.ndim, h.shape, h.fortran);
        if (rc != 0)
            return rc;
    } else {
        if (h.data_bytes > (uint64_t)PTRDIFF_MAX)
            return tdm__err(rt, TDM_EOVERFLOW, "%s: too large", who);
        rc = tdm__io_new_tensor(rt, who, h.dtype, h.ndim, h.shape, h.fortran, o->mem, &t);
        if (rc != 0)
            return rc;
    }
    uLong c = crc32_z(0L, Z_NULL, 0);
    uLong *pc = crc ? &c : NULL;
    if (crc) {
        /* The CRC covers the whole member: header, data and anything after. */
        unsigned char hb[4096];
        uint64_t done = 0;
        while (rc == 0 && done < h.data_offset) {
            size_t step =
                h.data_offset - done > sizeof hb ? sizeof hb : (size_t)(h.data_offset - done);
            rc = tdm__io_pread(rt, who, path, fd, hb, step, off + done, "the header");
            c = crc32_z(c, hb, step);
            done += step;
        }
    }
    if (rc == 0)
        rc = read_data(rt, who, path, fd, tdm_tensor_data(t), h.data_bytes, off + h.data_offset,
                       h.big_endian ? tdm_dtype_size(h.dtype) : 0, pc);
    if (rc == 0 && crc) {
        unsigned char tb[4096];
        uint64_t at = h.data_offset + h.data_bytes;
        while (rc == 0 && at < len) {
            size_t step = len - at > sizeof tb ? sizeof tb : (size_t)(len - at);
            rc = tdm__io_pread(rt, who, path, fd, tb, step, off + at, "the member");
            c = crc32_z(c, tb, step);
            at += step;
        }
        if (rc == 0 && (uint32_t)c != *crc)
            rc = tdm__err(rt, TDM_ECORRUPT,
                          "%s: '%s': CRC-32 mismatch (stored %08x, computed %08x): the member is "
                          "corrupted",
                          who, path, *crc, (uint32_t)c);
    }
    if (rc == 0 && !dst && h.fortran && o->c_order)
        rc = tdm__io_to_c_order(rt, who, &t, o->mem);
    if (rc != 0) {
        if (!dst)
            tdm_tensor_release(t);
        return rc;
    }
    if (!dst)
        *out = t;
    return 0;
}
