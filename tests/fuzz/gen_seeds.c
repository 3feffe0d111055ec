/* SPDX-License-Identifier: MIT */
/* Writes the seed corpus of the fuzz targets into <dir>/{npy,npz,tdz}/: small valid files of
 * every kind the readers accept (the committed corpus under tests/fuzz/corpus was made by it).
 *   fuzz_gen_seeds <dir> */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tandem.h"

static int save_all(tdm_runtime *rt, const char *dir, const char *name, tdm_tensor *t)
{
    char p[512];
    int rc = 0;
    snprintf(p, sizeof p, "%s/npy/%s.npy", dir, name);
    rc |= tdm_save(t, p, NULL);
    tdm_save_opts o = TDM_SAVE_OPTS_INIT;
    o.npy_version = 2;
    snprintf(p, sizeof p, "%s/npy/%s_v2.npy", dir, name);
    rc |= tdm_save(t, p, &o);
    const tdm_codec codecs[3] = {TDM_CODEC_ZSTD, TDM_CODEC_LZ4, TDM_CODEC_DEFLATE};
    for (int c = 0; c < 3; c++) {
        o = (tdm_save_opts)TDM_SAVE_OPTS_INIT;
        o.codec = codecs[c];
        o.chunk_bytes = 4096;
        snprintf(p, sizeof p, "%s/tdz/%s_%s.tdz", dir, name, tdm_codec_name(codecs[c]));
        rc |= tdm_save(t, p, &o);
    }
    const char *names[2] = {"a", "b"};
    const tdm_tensor *ts[2] = {t, t};
    for (int d = 0; d < 2; d++) {
        o = (tdm_save_opts)TDM_SAVE_OPTS_INIT;
        o.codec = d ? TDM_CODEC_DEFLATE : TDM_CODEC_NONE;
        snprintf(p, sizeof p, "%s/npz/%s_%s.npz", dir, name, d ? "deflate" : "stored");
        rc |= tdm_npz_save(rt, p, names, ts, 2, &o);
    }
    return rc;
}

/* The same .npy with its descr made big-endian ('<' -> '>'): the readers' byte swap. */
static int save_big_endian(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/npy/%s.npy", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f)
        return 1;
    static unsigned char b[1 << 16];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    unsigned char *q = n > 10 ? memchr(b + 10, '<', n - 10) : NULL;
    if (!q)
        return 1;
    *q = '>';
    snprintf(p, sizeof p, "%s/npy/%s_be.npy", dir, name);
    f = fopen(p, "wb");
    if (!f)
        return 1;
    int rc = fwrite(b, 1, n, f) != n;
    return fclose(f) != 0 || rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <dir>\n", argv[0]);
        return 2;
    }
    const char *sub[3] = {"npy", "npz", "tdz"};
    mkdir(argv[1], 0755);
    for (int i = 0; i < 3; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", argv[1], sub[i]);
        mkdir(p, 0755);
    }
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    tdm_runtime *rt;
    if (tdm_runtime_open(&rt, &cfg) != 0)
        return 1;
    int rc = 0;
    for (int dt = 0; dt < TDM_DTYPE_COUNT; dt++) {
        int64_t shape[2] = {3 + dt, 5};
        tdm_tensor *t;
        if (tdm_tensor_empty(rt, (tdm_dtype)dt, 2, shape, 0, &t) != 0)
            return 1;
        unsigned char *b = tdm_tensor_data(t);
        for (size_t k = 0; k < tdm_tensor_nbytes(t); k++)
            b[k] = (unsigned char)(dt == TDM_BOOL ? k % 3 == 0 : k * 7 % 13);
        char name[32];
        snprintf(name, sizeof name, "%s_2d", tdm_dtype_name((tdm_dtype)dt));
        rc |= save_all(rt, argv[1], name, t);
        if (tdm_dtype_size((tdm_dtype)dt) > 1 && dt != TDM_BF16)
            rc |= save_big_endian(argv[1], name);
        tdm_tensor_release(t);
    }
    /* A Fortran-order file, a scalar, an empty tensor, a larger compressible one. */
    double buf[6] = {1, 2, 3, 4, 5, 6};
    int64_t fs[2] = {2, 3}, fst[2] = {1, 2};
    tdm_tensor *f;
    tdm_tensor_wrap(rt, TDM_F64, 2, fs, fst, buf, &f);
    rc |= save_all(rt, argv[1], "fortran", f);
    tdm_tensor_release(f);
    tdm_tensor *s;
    tdm_tensor_zeros(rt, TDM_I64, 0, NULL, 0, &s);
    rc |= save_all(rt, argv[1], "scalar", s);
    tdm_tensor_release(s);
    int64_t es[3] = {4, 0, 2};
    tdm_tensor_zeros(rt, TDM_F32, 3, es, 0, &s);
    rc |= save_all(rt, argv[1], "empty", s);
    tdm_tensor_release(s);
    int64_t ls[1] = {6000};
    tdm_tensor_empty(rt, TDM_F32, 1, ls, 0, &s);
    float *fd = tdm_tensor_data(s);
    for (int k = 0; k < 6000; k++)
        fd[k] = (float)(k % 100);
    rc |= save_all(rt, argv[1], "large", s);
    tdm_tensor_release(s);
    tdm_runtime_close(rt);
    return rc != 0;
}
