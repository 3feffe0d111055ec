/* SPDX-License-Identifier: MIT */
/* npy_io — tensor files with tandem: NumPy's .npy and .npz (numpy.save / load / savez), memory
 * mapping (numpy.load(mmap_mode='r')), compressed tensor files (joblib's compress=('zstd', 3))
 * and a streaming writer with flat memory.
 *
 *   sample_npy_io [DIR]
 *
 * Writes its files into DIR (default: a new temporary directory, removed at the end) and reads
 * each back, checking every element. The .npy files open in NumPy: np.load("DIR/x.npy").
 * Exit code 0 when every round trip matched; 1 on a failed call or a mismatch; 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tandem.h>

static tdm_runtime *rt;
static int failures;

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            failures++;                                                                            \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* 1 if t is a 1000 x 16 f32 tensor holding the values fill() wrote (row r, column c: r + c/16). */
static int same(const char *what, const tdm_tensor *t)
{
    const float *d = tdm_tensor_data(t);
    int ok = d && tdm_tensor_dtype(t) == TDM_F32 && tdm_tensor_numel(t) == 1000 * 16;
    for (int64_t i = 0; ok && i < 1000 * 16; i++)
        ok = d[i] == (float)(i / 16) + (float)(i % 16) / 16.0f;
    printf("  %-38s %s\n", what, ok ? "matches" : "MISMATCH");
    failures += !ok;
    return ok;
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: sample_npy_io [DIR]\n");
        return 2;
    }
    char tmp[] = "/tmp/tandem_npy_io_XXXXXX", path[4096];
    const char *dir = argc == 2 ? argv[1] : mkdtemp(tmp);
    if (!dir) {
        perror("mkdtemp");
        return 1;
    }
    if (tdm_runtime_open(&rt, NULL) != 0) {
        fprintf(stderr, "tdm_runtime_open: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    tdm_tensor *x = NULL, *y = NULL, *m = NULL, *z = NULL, *row = NULL;
    tdm_npz *npz = NULL;
    tdm_writer *w = NULL;
    int64_t shape[2] = {1000, 16};
    CHECK(tdm_tensor_empty(rt, TDM_F32, 2, shape, TDM_MEM_HOST, &x));
    float *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < 1000 * 16; i++)
        xd[i] = (float)(i / 16) + (float)(i % 16) / 16.0f;
    printf("tensor files in %s\n", dir);

    /* 1. .npy: numpy.save / numpy.load */
    snprintf(path, sizeof path, "%s/x.npy", dir);
    CHECK(tdm_save(x, path, NULL));
    CHECK(tdm_load(rt, path, NULL, &y));
    same("x.npy read back", y);

    /* 2. the same file memory-mapped: nothing is read until touched */
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    CHECK(tdm_load(rt, path, &lo, &m));
    same("x.npy mapped (mmap_mode='r')", m);

    /* 3. a compressed tensor file: zstd level 3 in checksummed chunks */
    tdm_save_opts so = TDM_SAVE_OPTS_INIT;
    CHECK(tdm_codec_from_name("zstd", &so.codec));
    so.level = 3;
    snprintf(path, sizeof path, "%s/x.tdz", dir);
    CHECK(tdm_save(x, path, &so));
    tdm_tensor_release(y);
    y = NULL;
    CHECK(tdm_load(rt, path, NULL, &y));
    same("x.tdz (zstd 3) read back", y);

    /* 4. .npz: several named tensors in one archive (numpy.savez) */
    snprintf(path, sizeof path, "%s/xy.npz", dir);
    const char *names[2] = {"x", "again"};
    const tdm_tensor *members[2] = {x, y};
    CHECK(tdm_npz_save(rt, path, names, members, 2, NULL));
    CHECK(tdm_npz_open(rt, path, &npz));
    printf("  xy.npz has %d members\n", tdm_npz_count(npz));
    CHECK(tdm_npz_load(npz, "again", NULL, &z));
    same("xy.npz member 'again'", z);

    /* 5. a streaming writer: rows appended in steps, memory stays flat; the row count is
     *    whatever was written (shape[0] = -1) */
    snprintf(path, sizeof path, "%s/rows.npy", dir);
    CHECK(tdm_writer_open(rt, path, TDM_F32, 2, (int64_t[]){-1, 16}, NULL, &w));
    for (int64_t r = 0; r < 1000; r += 100) {
        CHECK(tdm_tensor_view_rows(x, r, r + 100, &row));
        CHECK(tdm_writer_append(w, row));
        tdm_tensor_release(row);
        row = NULL;
    }
    int rc = tdm_writer_close(w);
    w = NULL;
    CHECK(rc);
    tdm_tensor_release(z);
    z = NULL;
    CHECK(tdm_load(rt, path, NULL, &z));
    same("rows.npy written 100 rows at a time", z);

done:
    tdm_writer_abort(w); /* (only when a step above failed) */
    tdm_npz_close(npz);
    tdm_tensor_release(row);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(m);
    tdm_tensor_release(z);
    if (tdm_runtime_close(rt) != 0)
        failures++;
    if (argc < 2) { /* our temporary directory: remove what we wrote */
        const char *files[] = {"x.npy", "x.tdz", "xy.npz", "rows.npy"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    printf("%s\n", failures ? "FAILED" : "all round trips matched");
    return failures ? 1 : 0;
}
