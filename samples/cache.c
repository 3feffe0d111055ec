/* SPDX-License-Identifier: MIT */
/* cache — joblib's Memory in C: tdm_cache_map() is tdm_map() through a result cache on disk.
 * The first call computes exp(x)*sinh(x) and stores it; the second, with the same kernel,
 * parameters and input bytes, loads (or maps) the stored result instead of computing; a
 * changed input is a new key, computed again.
 *
 *   sample_cache [CACHE_DIR] [N]
 *
 * CACHE_DIR defaults to a new temporary directory (cleared and removed at the end); N to 2e6.
 * Exit code 0 when the hit, the miss and every value were as expected; 1 otherwise; 2 usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <tandem.h>

static tdm_runtime *rt;

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            ok = 0;                                                                                \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* 1 when y = exp(x)*sinh(x) for every element. */
static int correct(const tdm_tensor *x, const tdm_tensor *y)
{
    const double *xd = tdm_tensor_data(x), *yd = tdm_tensor_data(y);
    for (int64_t i = 0; i < tdm_tensor_numel(x); i++)
        if (fabs(yd[i] - exp(xd[i]) * sinh(xd[i])) > 1e-12 * (1 + fabs(yd[i])))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/tandem_cache_XXXXXX";
    const char *dir = argc > 1 ? argv[1] : mkdtemp(tmp);
    int64_t n = argc > 2 ? strtoll(argv[2], NULL, 10) : 2000000;
    if (argc > 3 || !dir || n < 1 || (argc > 1 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: sample_cache [CACHE_DIR] [N]\n");
        return 2;
    }
    if (tdm_runtime_open(&rt, NULL) != 0) {
        fprintf(stderr, "tdm_runtime_open: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    int ok = 1;
    tdm_cache *c = NULL;
    tdm_tensor *x = NULL, *y1 = NULL, *y2 = NULL, *y3 = NULL;
    CHECK(tdm_tensor_empty(rt, TDM_F64, 1, &n, TDM_MEM_HOST, &x));
    double *xd = tdm_tensor_data(x);
    for (int64_t i = 0; i < n; i++)
        xd[i] = (double)(i % 1000) * 1e-3;

    /* Hits come back memory-mapped from the entry's .npy file: no copy, pages read on touch. */
    tdm_cache_opts co = TDM_CACHE_OPTS_INIT;
    co.mmap = TDM_MMAP_READ;
    CHECK(tdm_cache_open(rt, dir, &co, &c));

    /* Outputs NULL: the cache creates them (computed on a miss, loaded on a hit). */
    int hit = -1;
    tdm_report rep = TDM_REPORT_INIT;
    CHECK(tdm_cache_map(c, "exp_sinh", &x, 1, &y1, 1, NULL, 0, NULL, &rep, &hit));
    printf("first call:  %s, %.3f s computing\n", hit ? "hit (the cache was not empty)" : "miss",
           rep.wall_s);
    CHECK(tdm_cache_map(c, "exp_sinh", &x, 1, &y2, 1, NULL, 0, NULL, NULL, &hit));
    printf("second call: %s, output stored as %s\n", hit ? "hit" : "MISS",
           (tdm_tensor_mem(y2) & TDM_MEM_MAPPED) ? "a mapped file" : "memory");
    ok &= hit == 1;

    xd[0] = 0.5; /* one element changed: another key */
    CHECK(tdm_cache_map(c, "exp_sinh", &x, 1, &y3, 1, NULL, 0, NULL, NULL, &hit));
    printf("changed input: %s\n", hit ? "HIT (wrong)" : "miss, computed again");
    ok &= hit == 0 && correct(x, y3);
    xd[0] = 0.0;
    ok &= correct(x, y1) && correct(x, y2);

    tdm_cache_stats st;
    CHECK(tdm_cache_stats_get(c, &st));
    printf("cache: %lld hit(s), %lld miss(es), %lld entr%s stored\n", (long long)st.hits,
           (long long)st.misses, (long long)st.stores, st.stores == 1 ? "y" : "ies");
    if (argc < 2)
        CHECK(tdm_cache_clear(c)); /* our temporary directory: empty it */

done:
    tdm_tensor_release(x);
    tdm_tensor_release(y1);
    tdm_tensor_release(y2);
    tdm_tensor_release(y3);
    tdm_cache_close(c);
    if (tdm_runtime_close(rt) != 0)
        ok = 0;
    if (argc < 2)
        rmdir(dir);
    printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
