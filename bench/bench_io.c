/* SPDX-License-Identifier: MIT */
/* bench_io: tensor files and the result cache.
 *
 *  1. Save and load of a large f32 tensor (1 GiB by default) as .npy (raw), zstd-1 and lz4
 *     compressed files; load also memory-mapped (then every page touched). GB/s of the tensor's
 *     bytes. The file system's page cache is warm for loads (as for NumPy / joblib in
 *     bench_io.py, which runs this program and measures them on the same data in the same run).
 *  2. exp_sinh over 50M doubles: computed vs a cache hit (loaded, and mapped + checksummed).
 *
 *   bench_io [--mb 1024] [--reps 3] [--elems 50000000] [--dir /tmp] [--keep]
 * Lines starting with "RESULT" are read by bench_io.py: RESULT <name> <seconds> <bytes>.
 *
 *   bench_io --serve FILE.npy
 * loads FILE.npy (untimed), answers "READY <bytes>", then runs commands from stdin, one a line,
 * each answered by "T <seconds>" (or "ERR <message>"): "save PATH" (unlink PATH, then a timed
 * tdm_save with default options: no fsync), "fsave PATH" (the same with opts.fsync = 1),
 * "load PATH" (a timed tdm_load into new memory, then an untimed check against the tensor and
 * a release), "mmap PATH" (a timed tdm_load with TDM_MMAP_READ and a read of one float per
 * page, then an untimed release), "quit". bench_io.py uses it to interleave tandem's raw .npy
 * save / load / mapped load with numpy's rep by rep, so both sides meet the same memory and
 * page-cache state (on a VM that hands freed memory back to the host, memory freed seconds
 * earlier costs several times more to touch again than memory freed just before). */
#include <fcntl.h>
#include <math.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_common.h"

static const char *opt_str(int argc, char **argv, const char *name, const char *def)
{
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=')
            return argv[i] + n + 1;
        if (strcmp(argv[i], name) == 0 && i + 1 < argc)
            return argv[i + 1];
    }
    return def;
}

static double file_mb(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (double)st.st_size / 1e6 : 0.0;
}

/* A signal with some structure and some noise: compresses like measured data, not like zeros. */
static void fill_signal(float *d, int64_t n)
{
    uint32_t x = 12345;
    for (int64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        float v = sinf((float)(i % 100000) * 6.2831853e-5f) * 100.0f;
        d[i] = roundf(v * 16.0f) / 16.0f + (float)(x >> 29) * 0.001f;
    }
}

/* Reads one float per 4 KiB page of d[0..n) (every page of a mapping touched). */
static double touch_pages(const float *d, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i += 1024)
        s += d[i];
    return s;
}

static double touch_sum(const tdm_tensor *t)
{
    return touch_pages(tdm_tensor_data(t), tdm_tensor_numel(t));
}

/* mmap(PROT_READ, MAP_SHARED) of a .npy file by hand, then the same touch (touch_pages) over
 * its n f32 after the header (128 bytes, as tdm_save writes it). */
static double plain_mmap_touch(const char *path, int64_t n, void **map, size_t *map_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "bench_io: cannot open %s\n", path);
        exit(1);
    }
    char *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        fprintf(stderr, "bench_io: cannot map %s\n", path);
        exit(1);
    }
    double s = touch_pages((const float *)(m + (st.st_size - n * 4)), n);
    *map = m; /* unmapped by the caller, untimed, as tandem's tensor is released untimed */
    *map_len = (size_t)st.st_size;
    return s;
}

#define MAXR 16

static void report(const char *name, double *v, int reps, double bytes)
{
    double mn, mx;
    bench_minmax(v, reps, &mn, &mx);
    double med = bench_median(v, reps);
    printf("  %-34s %8.3f s  %6.2f GB/s   (%.3f .. %.3f s)\n", name, med, bytes / med / 1e9, mn,
           mx);
    printf("RESULT %s %.6f %.0f\n", name, med, bytes);
}

/* --serve: see the header comment. */
static int serve(const char *input)
{
    tdm_runtime *rt = bench_open(0);
    tdm_tensor *x;
    BENCH_CHECK(rt, tdm_load(rt, input, NULL, &x));
    size_t nbytes = (size_t)tdm_tensor_numel(x) * tdm_dtype_size(tdm_tensor_dtype(x));
    printf("READY %zu\n", nbytes);
    fflush(stdout);
    double sink = 0; /* the pages read by "mmap", kept live */
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "quit") == 0)
            break;
        int rc = 0;
        double t = 0;
        if (strncmp(line, "save ", 5) == 0 || strncmp(line, "fsave ", 6) == 0) {
            const char *path = strchr(line, ' ') + 1;
            tdm_save_opts so = TDM_SAVE_OPTS_INIT;
            so.fsync = line[0] == 'f';
            unlink(path);
            double t0 = bench_now();
            rc = tdm_save(x, path, &so);
            t = bench_now() - t0;
        } else if (strncmp(line, "load ", 5) == 0) {
            tdm_tensor *y = NULL;
            double t0 = bench_now();
            rc = tdm_load(rt, line + 5, NULL, &y);
            t = bench_now() - t0;
            if (rc == 0 && memcmp(tdm_tensor_data(y), tdm_tensor_data(x), nbytes) != 0) {
                printf("ERR %s: round trip differs\n", line + 5);
                fflush(stdout);
                tdm_tensor_release(y);
                continue;
            }
            tdm_tensor_release(y);
        } else if (strncmp(line, "mmap ", 5) == 0) {
            tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
            lo.mmap = TDM_MMAP_READ;
            tdm_tensor *y = NULL;
            double t0 = bench_now();
            rc = tdm_load(rt, line + 5, &lo, &y);
            if (rc == 0)
                sink += touch_sum(y);
            t = bench_now() - t0;
            tdm_tensor_release(y);
        } else {
            printf("ERR unknown command '%s'\n", line);
            fflush(stdout);
            continue;
        }
        if (rc != 0)
            printf("ERR %s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
        else
            printf("T %.6f\n", t);
        fflush(stdout);
    }
    tdm_tensor_release(x);
    if (sink == 12345.678)
        printf(" ");
    bench_close(rt);
    return 0;
}

int main(int argc, char **argv)
{
    const char *serve_input = opt_str(argc, argv, "--serve", NULL);
    if (serve_input)
        return serve(serve_input);
    int64_t mb = bench_opt(argc, argv, "--mb", 1024);
    int reps = (int)bench_opt(argc, argv, "--reps", 3);
    int64_t elems = bench_opt(argc, argv, "--elems", 50000000);
    const char *dir = opt_str(argc, argv, "--dir", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    int keep = bench_flag(argc, argv, "--keep");
    if (reps < 1 || reps > MAXR)
        reps = 3;
    tdm_runtime *rt = bench_open(0);
    bench_header("bench_io", "tensor files (save / load GB/s) and the result cache", rt, reps);

    int64_t n = mb * (1 << 20) / 4;
    double bytes = (double)n * 4;
    tdm_tensor *x;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F32, 1, &n, TDM_MEM_HOST, &x));
    fill_signal(tdm_tensor_data(x), n);
    char in_path[512], p_raw[512], p_zstd[512], p_lz4[512];
    snprintf(in_path, sizeof in_path, "%s/bench_io_input.npy", dir);
    snprintf(p_raw, sizeof p_raw, "%s/bench_io_raw.npy", dir);
    snprintf(p_zstd, sizeof p_zstd, "%s/bench_io_zstd1.tdz", dir);
    snprintf(p_lz4, sizeof p_lz4, "%s/bench_io_lz4.tdz", dir);
    BENCH_CHECK(rt, tdm_save(x, in_path, NULL)); /* the input bench_io.py uses too */
    printf("-- %.0f MB f32 tensor, files in %s\n", bytes / 1e6, dir);

    struct {
        const char *name, *path;
        tdm_codec codec;
        int level;
    } v[3] = {{"raw", p_raw, TDM_CODEC_NONE, 0},
              {"zstd1", p_zstd, TDM_CODEC_ZSTD, 1},
              {"lz4", p_lz4, TDM_CODEC_LZ4, 0}};
    double ts[3][MAXR], tl[3][MAXR], tm[MAXR], tp[MAXR];
    double sink = 0;
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 3; k++) {
            tdm_save_opts so = TDM_SAVE_OPTS_INIT;
            so.codec = v[k].codec;
            so.level = v[k].level;
            unlink(v[k].path);
            double t0 = bench_now();
            BENCH_CHECK(rt, tdm_save(x, v[k].path, &so));
            ts[k][r] = bench_now() - t0;
            tdm_tensor *y;
            t0 = bench_now();
            BENCH_CHECK(rt, tdm_load(rt, v[k].path, NULL, &y));
            tl[k][r] = bench_now() - t0;
            if (memcmp(tdm_tensor_data(y), tdm_tensor_data(x), (size_t)bytes) != 0) {
                fprintf(stderr, "bench_io: %s round trip differs\n", v[k].name);
                return 1;
            }
            tdm_tensor_release(y);
        }
    /* Mapped loads of the raw file, once it is on disk (written back: dirty pages being
     * written while they are mapped made these 3 ms figures swing by 10%): tandem's, and the
     * same file mapped by hand (what numpy's mmap_mode='r' does) with the same touch, taking
     * turns, which goes first alternating. */
    int fd = open(p_raw, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fdatasync(fd) != 0) {
        fprintf(stderr, "bench_io: cannot sync %s\n", p_raw);
        return 1;
    }
    close(fd);
    for (int r = 0; r < reps; r++)
        for (int turn = 0; turn < 2; turn++) {
            double t0 = bench_now();
            if ((turn + r) % 2 == 0) {
                tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
                lo.mmap = TDM_MMAP_READ;
                tdm_tensor *y;
                BENCH_CHECK(rt, tdm_load(rt, p_raw, &lo, &y));
                sink += touch_sum(y);
                tm[r] = bench_now() - t0;
                tdm_tensor_release(y);
            } else {
                void *map;
                size_t map_len;
                sink += plain_mmap_touch(p_raw, n, &map, &map_len);
                tp[r] = bench_now() - t0;
                munmap(map, map_len);
            }
        }
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "tandem_save_%s", v[k].name);
        report(name, ts[k], reps, bytes);
        snprintf(name, sizeof name, "tandem_load_%s", v[k].name);
        report(name, tl[k], reps, bytes);
    }
    report("tandem_load_raw_mmap_touch", tm, reps, bytes);
    report("plain_mmap_touch", tp, reps, bytes);
    printf("  tandem mmap + touch / a plain mmap of the same file + touch, same run: %.3fx\n",
           bench_median(tp, reps) / bench_median(tm, reps));
    printf("  file sizes: raw %.0f MB, zstd-1 %.0f MB, lz4 %.0f MB\n", file_mb(p_raw),
           file_mb(p_zstd), file_mb(p_lz4));
    printf("RESULT size_raw 0 %.0f\nRESULT size_zstd1 0 %.0f\nRESULT size_lz4 0 %.0f\n",
           file_mb(p_raw) * 1e6, file_mb(p_zstd) * 1e6, file_mb(p_lz4) * 1e6);
    if (!keep) {
        unlink(p_raw);
        unlink(p_zstd);
        unlink(p_lz4);
    }
    tdm_tensor_release(x);

    /* ---- the cache: exp_sinh over `elems` doubles -------------------------------------- */
    printf("-- result cache: exp_sinh over %lld doubles\n", (long long)elems);
    tdm_tensor *in;
    BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, &elems, TDM_MEM_HOST, &in));
    double *d = tdm_tensor_data(in);
    for (int64_t i = 0; i < elems; i++)
        d[i] = (double)(i % 1000) * 1e-3;
    char cdir[512];
    snprintf(cdir, sizeof cdir, "%s/bench_io_cache", dir);
    tdm_cache_opts co = TDM_CACHE_OPTS_INIT, cm = TDM_CACHE_OPTS_INIT;
    cm.mmap = TDM_MMAP_READ;
    tdm_cache *c, *c_map;
    BENCH_CHECK(rt, tdm_cache_open(rt, cdir, &co, &c));
    BENCH_CHECK(rt, tdm_cache_open(rt, cdir, &cm, &c_map));
    BENCH_CHECK(rt, tdm_cache_clear(c));
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.progress = TDM_PROGRESS_OFF;
    double tc[MAXR], th[MAXR], thm[MAXR], tstore = 0;
    /* the stored result: every hit must give it back bit for bit; a recomputation may differ in
     * the last bits where AUTO placed batches on another device (PoCL's libm) */
    tdm_tensor *y0 = NULL;
    {
        int hit;
        double t0 = bench_now();
        BENCH_CHECK(rt, tdm_cache_map(c, "exp_sinh", &in, 1, &y0, 1, NULL, 0, &mo, NULL, &hit));
        tstore = bench_now() - t0;
    }
    const double *want = tdm_tensor_data(y0);
    for (int r = 0; r < reps; r++) {
        tdm_tensor *y;
        BENCH_CHECK(rt, tdm_tensor_empty(rt, TDM_F64, 1, &elems, TDM_MEM_HOST, &y));
        double t0 = bench_now();
        BENCH_CHECK(rt, tdm_map(rt, "exp_sinh", &in, 1, &y, 1, NULL, 0, &mo, NULL));
        tc[r] = bench_now() - t0;
        tdm_tensor *h = NULL, *hm = NULL;
        int hit = 0, hit2 = 0;
        t0 = bench_now();
        BENCH_CHECK(rt, tdm_cache_map(c, "exp_sinh", &in, 1, &h, 1, NULL, 0, &mo, NULL, &hit));
        th[r] = bench_now() - t0;
        t0 = bench_now();
        BENCH_CHECK(rt,
                    tdm_cache_map(c_map, "exp_sinh", &in, 1, &hm, 1, NULL, 0, &mo, NULL, &hit2));
        thm[r] = bench_now() - t0;
        if (!hit || !hit2 || memcmp(tdm_tensor_data(h), want, (size_t)elems * 8) ||
            memcmp(tdm_tensor_data(hm), want, (size_t)elems * 8)) {
            fprintf(stderr, "bench_io: cache hit %s\n",
                    !hit || !hit2 ? "missing" : "differs from the stored result");
            return 1;
        }
        const double *got = tdm_tensor_data(y);
        for (int64_t i = 0; i < elems; i++)
            if (!(fabs(got[i] - want[i]) <= 1e-13 * fabs(want[i]))) {
                fprintf(stderr, "bench_io: recomputed [%lld] %.17g, stored %.17g\n",
                        (long long)i, got[i], want[i]);
                return 1;
            }
        tdm_tensor_release(y);
        tdm_tensor_release(h);
        tdm_tensor_release(hm);
    }
    double cbytes = (double)elems * 8;
    printf("  first call (compute + store)       %8.3f s\n", tstore);
    report("cache_compute_exp_sinh", tc, reps, cbytes);
    report("cache_hit_load", th, reps, cbytes);
    report("cache_hit_mmap_verified", thm, reps, cbytes);
    double mc = bench_median(tc, reps), mh = bench_median(th, reps), mm = bench_median(thm, reps);
    printf("  hit vs recompute (recompute / hit, >1: the hit is faster): %.1fx loaded, %.1fx "
           "mapped (inputs hashed each call)\n",
           mc / mh, mc / mm);
    BENCH_CHECK(rt, tdm_cache_clear(c));
    tdm_cache_close(c);
    tdm_cache_close(c_map);
    rmdir(cdir);
    tdm_tensor_release(y0);
    tdm_tensor_release(in);
    if (sink == 12345.678)
        printf(" ");
    bench_close(rt);
    return 0;
}
