/* SPDX-License-Identifier: MIT */
/* Distributed maps across MPI ranks. The same executable runs as one rank (plain CTest) and
 * under `mpirun -np 2` and `-np 4` (the dist2_* and dist4_* tests): every test is collective
 * and checks what holds for any number of ranks. Each rank opens one runtime (one CPU thread,
 * so four ranks fit on two cores) and one tdm_dist for the whole group. */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"

#include "dist_internal.h" /* the transport, to provoke a real MPI error */

static tdm_runtime *g_rt;
static tdm_dist *g_d;
static int g_rank, g_size;

static int group_setup(void **state)
{
    (void)state;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    cfg.backends = "cpu";
    if (getenv("TDM_TEST_DEBUG"))
        cfg.debug = TDM_DEBUG_MAP;
    if (tdm_runtime_open(&g_rt, &cfg) != 0)
        return -1;
    if (tdm_dist_open(&g_d, g_rt, NULL) != 0) {
        fprintf(stderr, "tdm_dist_open: %s\n", tdm_errmsg(g_rt));
        return -1;
    }
    g_rank = tdm_dist_rank(g_d);
    g_size = tdm_dist_size(g_d);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = tdm_dist_close(g_d);
    int rc2 = tdm_runtime_close(g_rt);
    return rc || rc2 ? -1 : 0;
}

/* Deterministic data, the same on every rank. */
static double val(int64_t i)
{
    return sin((double)i * 0.37) * 2.0;
}

static tdm_tensor *make_f64(int64_t rows, int64_t cols, double (*f)(int64_t))
{
    int64_t shape[2] = {rows, cols};
    tdm_tensor *t = NULL;
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F64, cols ? 2 : 1, shape, TDM_MEM_HOST, &t), 0);
    double *p = tdm_tensor_data(t);
    for (int64_t i = 0; i < rows * (cols ? cols : 1); i++)
        p[i] = f ? f(i) : 0.0;
    return t;
}

static void assert_same(tdm_tensor *a, tdm_tensor *b)
{
    assert_int_equal(tdm_tensor_nbytes(a), tdm_tensor_nbytes(b));
    assert_memory_equal(tdm_tensor_data(a), tdm_tensor_data(b), tdm_tensor_nbytes(a));
}

static void test_open_reports_rank_and_size(void **state)
{
    (void)state;
    const char *env = getenv("OMPI_COMM_WORLD_SIZE");
    assert_int_equal(g_size, env && tdm_dist_available() ? atoi(env) : 1);
    assert_true(g_rank >= 0 && g_rank < g_size);
    assert_int_equal(tdm_dist_is_mpi(g_d), env && tdm_dist_available() ? 1 : 0);
    assert_ptr_equal(tdm_dist_runtime(g_d), g_rt);
    /* a second distributed runtime over MPI that is already running */
    tdm_dist *d2 = NULL;
    assert_int_equal(tdm_dist_open(&d2, g_rt, NULL), 0);
    assert_int_equal(tdm_dist_size(d2), g_size);
    assert_int_equal(tdm_dist_close(d2), 0);
    /* single: every rank alone */
    tdm_dist_config cfg = TDM_DIST_CONFIG_INIT;
    cfg.single = 1;
    assert_int_equal(tdm_dist_open(&d2, g_rt, &cfg), 0);
    assert_int_equal(tdm_dist_size(d2), 1);
    assert_int_equal(tdm_dist_rank(d2), 0);
    assert_int_equal(tdm_dist_close(d2), 0);
}

/* One map, run distributed (gathered to root, then to all) and locally; results must match. */
/* The same map partitioned: each rank gets its rows of the inputs (scatter; inputs the kernel
 * takes whole stay replicated), computes into its own rows (several chunks, so rows are
 * stolen, travel and come back), and rank 0 gathers the results. */
static void check_partitioned(const char *kernel, tdm_tensor *const *in, int n_in, unsigned whole,
                              tdm_tensor **out_l, int n_out, const void *params, size_t psize)
{
    int64_t rows[64];
    assert_int_equal(tdm_dist_split(g_d, tdm_tensor_dim(out_l[0], 0), NULL, rows), 0);
    tdm_tensor *lin[4] = {0}, *lout[4] = {0};
    for (int i = 0; i < n_in; i++) {
        if (whole >> i & 1u)
            lin[i] = tdm_tensor_retain(in[i]);
        else
            assert_int_equal(tdm_dist_scatter(g_d, in[i], rows, NULL, 0, 0, &lin[i]), 0);
    }
    for (int j = 0; j < n_out; j++) { /* the reference's shape; zeroed */
        assert_int_equal(tdm_dist_scatter(g_d, out_l[j], rows, NULL, 0, 0, &lout[j]), 0);
        memset(tdm_tensor_data(lout[j]), 0, tdm_tensor_nbytes(lout[j]));
    }
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.layout = TDM_DIST_PARTITIONED;
    o.min_chunk = 5;
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    if (tdm_dist_map(g_d, kernel, lin, n_in, lout, n_out, params, psize, NULL, &o, &rep) != 0)
        fail_msg("%s partitioned: %s", kernel, tdm_errmsg(g_rt));
    assert_int_equal(rep.items, tdm_tensor_dim(out_l[0], 0));
    for (int j = 0; j < n_out; j++) {
        tdm_tensor *g = NULL;
        assert_int_equal(tdm_dist_gather(g_d, lout[j], 0, 0, &g), 0);
        if (g_rank == 0)
            assert_same(g, out_l[j]);
        tdm_tensor_release(g);
        tdm_tensor_release(lout[j]);
    }
    for (int i = 0; i < n_in; i++)
        tdm_tensor_release(lin[i]);
}

static void check_map(const char *kernel, tdm_tensor *const *in, int n_in, unsigned whole,
                      tdm_tensor **out_d, tdm_tensor **out_l, int n_out, const void *params,
                      size_t psize)
{
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.min_chunk = 7; /* many chunks, so several ranks take part */
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    int rc = tdm_dist_map(g_d, kernel, in, n_in, out_d, n_out, params, psize, NULL, &o, &rep);
    if (rc != 0)
        fail_msg("%s: %s", kernel, tdm_errmsg(g_rt));
    assert_int_equal(tdm_map(g_rt, kernel, in, n_in, out_l, n_out, params, psize, NULL, NULL), 0);
    assert_int_equal(rep.items, rep.items_total);
    assert_int_equal(rep.n_ranks, g_size);
    if (g_rank == 0)
        for (int j = 0; j < n_out; j++)
            assert_same(out_d[j], out_l[j]);
    /* gathered to all */
    o.gather = TDM_DIST_GATHER_ALL;
    for (int j = 0; j < n_out; j++)
        memset(tdm_tensor_data(out_d[j]), 0, tdm_tensor_nbytes(out_d[j]));
    assert_int_equal(
        tdm_dist_map(g_d, kernel, in, n_in, out_d, n_out, params, psize, NULL, &o, NULL), 0);
    for (int j = 0; j < n_out; j++)
        assert_same(out_d[j], out_l[j]);
    check_partitioned(kernel, in, n_in, whole, out_l, n_out, params, psize);
}

static void test_map_every_kernel_replicated_and_partitioned(void **state)
{
    (void)state;
    const int64_t n = 1000, c = 3;
    tdm_tensor *x = make_f64(n, c, val), *y = make_f64(n, c, NULL), *yl = make_f64(n, c, NULL);
    tdm_tensor *x2 = make_f64(n, c, val);
    /* elementwise */
    check_map("exp_sinh", &x, 1, 0u, &y, &yl, 1, NULL, 0);
    tdm_axpy_params ap = {0.5};
    tdm_tensor *xy[2] = {x, x2};
    check_map("axpy", xy, 2, 0u, &y, &yl, 1, &ap, sizeof ap);
    tdm_scale_shift_params sp = {2.0, -1.0};
    check_map("scale_shift", &x, 1, 0u, &y, &yl, 1, &sp, sizeof sp);
    /* per-row reductions */
    tdm_tensor *r = make_f64(n, 0, NULL), *rl = make_f64(n, 0, NULL);
    check_map("sum", &x, 1, 0u, &r, &rl, 1, NULL, 0);
    check_map("mean", &x, 1, 0u, &r, &rl, 1, NULL, 0);
    check_map("sumsq", &x, 1, 0u, &r, &rl, 1, NULL, 0);
    /* pi: no inputs, the outputs give the rows */
    tdm_pi_params pp = {1000};
    check_map("pi_leibniz", NULL, 0, 0u, &r, &rl, 1, &pp, sizeof pp);
    /* images */
    int64_t ishape[4] = {40, 8, 6, 3}, oshape[4] = {40, 3, 8, 6};
    tdm_tensor *img = NULL, *o1 = NULL, *o2 = NULL;
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_U8, 4, ishape, TDM_MEM_HOST, &img), 0);
    uint8_t *ip = tdm_tensor_data(img);
    for (size_t i = 0; i < tdm_tensor_nbytes(img); i++)
        ip[i] = (uint8_t)(i * 31u);
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F32, 4, oshape, TDM_MEM_HOST, &o1), 0);
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F32, 4, oshape, TDM_MEM_HOST, &o2), 0);
    tdm_normalize_params np = {{0.5f, 0.4f, 0.3f, 0}, {0.2f, 0.25f, 0.3f, 1}, 1, 0};
    check_map("normalize_u8", &img, 1, 0u, &o1, &o2, 1, &np, sizeof np);
    /* a kernel with inputs given whole (the weights): replicated on every rank */
    int64_t xs[2] = {n, 4}, ws[2] = {4, 5}, ys[2] = {n, 5};
    tdm_tensor *lx, *lw, *ly, *lyl;
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F32, 2, xs, 0, &lx), 0);
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F32, 2, ws, 0, &lw), 0);
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F32, 2, ys, 0, &ly), 0);
    assert_int_equal(tdm_tensor_empty(g_rt, TDM_F32, 2, ys, 0, &lyl), 0);
    for (int64_t i = 0; i < n * 4; i++)
        ((float *)tdm_tensor_data(lx))[i] = (float)val(i);
    for (int64_t i = 0; i < 20; i++)
        ((float *)tdm_tensor_data(lw))[i] = (float)val(i + 7);
    tdm_linear_params lp = {1, 0};
    tdm_tensor *lin[2] = {lx, lw};
    check_map("linear", lin, 2, 2u, &ly, &lyl, 1, &lp, sizeof lp);
    tdm_tensor *all[] = {x, y, yl, x2, r, rl, img, o1, o2, lx, lw, ly, lyl};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
}

/* ---- a kernel that is slow on the last rank (to make the others steal) ------------------- */

static int slow_cpu(const tdm_kernel_args *a)
{
    const double *x = a->in[0];
    double *y = a->out[0];
    long us = g_rank == g_size - 1 ? 300 : 30;
    for (int64_t i = 0; i < a->end - a->begin; i++) {
        struct timespec ts = {0, us * 1000};
        nanosleep(&ts, NULL);
        y[i] = x[i] * 2.0 + 1.0;
    }
    return 0;
}

static void register_slow(void)
{
    if (tdm_kernel_exists(g_rt, "slow_affine"))
        return;
    tdm_kernel_def k = TDM_KERNEL_DEF_INIT;
    k.name = "slow_affine";
    k.n_in_min = k.n_in_max = 1;
    k.n_out = 1;
    k.cpu = slow_cpu;
    assert_int_equal(tdm_kernel_register(g_rt, &k), 0);
}

static double idx(int64_t i)
{
    return (double)i;
}

static void test_map_partitioned_results_come_home(void **state)
{
    (void)state;
    register_slow();
    const int64_t n = 1200;
    tdm_tensor *g = g_rank == 0 ? make_f64(n, 0, idx) : NULL;
    /* uneven rows: rank r gets a share growing with r (the slow last rank the most) */
    int64_t *rows = calloc((size_t)g_size, sizeof *rows), sum = 0, w = 0;
    for (int r = 0; r < g_size; r++)
        w += r + 1;
    for (int r = 0; r < g_size; r++)
        sum += rows[r] = n * (r + 1) / w;
    rows[g_size - 1] += n - sum;
    tdm_tensor *xl = NULL, *yl = NULL;
    assert_int_equal(tdm_dist_scatter(g_d, g, rows, NULL, 0, TDM_MEM_HOST, &xl), 0);
    assert_int_equal(tdm_tensor_dim(xl, 0), rows[g_rank]);
    yl = make_f64(rows[g_rank], 0, NULL);
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.layout = TDM_DIST_PARTITIONED;
    o.min_chunk = 4;
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    if (tdm_dist_map(g_d, "slow_affine", &xl, 1, &yl, 1, NULL, 0, NULL, &o, &rep) != 0)
        fail_msg("%s", tdm_errmsg(g_rt));
    assert_int_equal(rep.items, n);
    if (g_size > 1) {
        assert_true(rep.steals >= 1); /* the slow rank's rows were taken */
        /* ... so it ran fewer than its own rows (it is 10x slower than the others) */
        assert_true(rep.ranks[g_size - 1].items < rows[g_size - 1]);
        assert_true(rep.bytes_moved > 0);
    }
    /* every rank's rows hold its own results, wherever they ran */
    const double *xp = tdm_tensor_data(xl), *yp = tdm_tensor_data(yl);
    for (int64_t i = 0; i < rows[g_rank]; i++)
        assert_true(yp[i] == xp[i] * 2.0 + 1.0);
    /* gathered back in order */
    tdm_tensor *yg = NULL;
    assert_int_equal(tdm_dist_gather(g_d, yl, 0, TDM_MEM_HOST, &yg), 0);
    if (g_rank == 0) {
        const double *p = tdm_tensor_data(yg);
        assert_int_equal(tdm_tensor_dim(yg, 0), n);
        for (int64_t i = 0; i < n; i++)
            assert_true(p[i] == (double)i * 2.0 + 1.0);
    } else {
        assert_null(yg);
    }
    if (g_rank == 0 && g_size > 1) {
        char buf[4096];
        tdm_dist_report_format(&rep, buf, sizeof buf);
        print_message("%s", buf);
    }
    tdm_tensor_release(yg);
    tdm_tensor_release(g);
    tdm_tensor_release(xl);
    tdm_tensor_release(yl);
    free(rows);
}

/* Each rank's chunks run in its worker processes (forked by its runtime, reading shared
 * tensors): scattered rows in shared memory, stolen rows received into shared buffers. */
static void test_worker_processes_on_every_rank(void **state)
{
    (void)state;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.procs = 1;
    cfg.use_env = 0;
    cfg.backends = "cpu,procs";
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    tdm_dist *d = NULL;
    assert_int_equal(tdm_dist_open(&d, rt, NULL), 0);
    /* 10x slower on the last rank (its worker process inherits g_rank), which holds most rows:
     * the others must steal, whatever the timing */
    tdm_kernel_def k = TDM_KERNEL_DEF_INIT;
    k.name = "slow_affine";
    k.n_in_min = k.n_in_max = 1;
    k.n_out = 1;
    k.cpu = slow_cpu;
    assert_int_equal(tdm_kernel_register(rt, &k), 0);
    const int64_t n = 600;
    int64_t shape[1] = {n};
    tdm_tensor *g = NULL, *xl = NULL, *yl = NULL, *yg = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, shape, TDM_MEM_SHARED, &g), 0);
    for (int64_t i = 0; i < n; i++)
        ((double *)tdm_tensor_data(g))[i] = val(i);
    /* the last rank holds most rows, so the others take some */
    int64_t rows[64] = {0};
    for (int r = 0; r < g_size; r++)
        rows[r] = g_size == 1 ? n : r == g_size - 1 ? n - 100 * (g_size - 1) : 100;
    assert_int_equal(tdm_dist_scatter(d, g, rows, NULL, 0, TDM_MEM_SHARED, &xl), 0);
    assert_int_equal(tdm_dist_scatter(d, g, rows, NULL, 0, TDM_MEM_SHARED, &yl), 0);
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_PROCS;
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.layout = TDM_DIST_PARTITIONED;
    o.min_chunk = 10;
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    if (tdm_dist_map(d, "slow_affine", &xl, 1, &yl, 1, NULL, 0, &mo, &o, &rep) != 0)
        fail_msg("%s", tdm_errmsg(rt));
    assert_int_equal(rep.items, n);
    if (g_size > 1) {
        /* some fast rank stole from the slow one; which one depends on who finished first */
        int64_t stolen = 0;
        for (int r = 0; r < g_size - 1; r++)
            stolen += rep.ranks[r].stolen_items;
        assert_true(rep.steals >= 1 && stolen > 0);
    }
    assert_int_equal(tdm_dist_gather(d, yl, 0, 0, &yg), 0);
    if (g_rank == 0)
        for (int64_t i = 0; i < n; i++)
            assert_true(((double *)tdm_tensor_data(yg))[i] == val(i) * 2.0 + 1.0);
    tdm_tensor_release(yg);
    tdm_tensor_release(yl);
    tdm_tensor_release(xl);
    tdm_tensor_release(g);
    assert_int_equal(tdm_dist_close(d), 0);
    assert_int_equal(tdm_runtime_close(rt), 0);
}

static void test_bcast_replicates_payload(void **state)
{
    (void)state;
    tdm_tensor *t = g_rank == 0 ? make_f64(500, 40, val) : NULL;
    assert_int_equal(tdm_dist_bcast(g_d, &t, 0, TDM_MEM_SHARED), 0);
    assert_non_null(t);
    tdm_tensor *ref = make_f64(500, 40, val);
    assert_same(t, ref);
    /* into an existing tensor, from the last rank */
    tdm_tensor *u = make_f64(500, 40, NULL);
    if (g_rank == g_size - 1)
        memcpy(tdm_tensor_data(u), tdm_tensor_data(ref), tdm_tensor_nbytes(ref));
    assert_int_equal(tdm_dist_bcast(g_d, &u, g_size - 1, 0), 0);
    assert_same(u, ref);
    /* a rank whose tensor has another shape fails the call on every rank */
    tdm_tensor *bad = make_f64(g_rank == 0 || g_size == 1 ? 500 : 499, 40, NULL);
    int rc = tdm_dist_bcast(g_d, &bad, 0, 0);
    if (g_size > 1) {
        assert_int_equal(rc, TDM_ESHAPE);
        if (g_rank == 0)
            assert_non_null(strstr(tdm_errmsg(g_rt), "rank 1"));
    } else {
        assert_int_equal(rc, 0);
    }
    /* bad arguments */
    assert_int_equal(tdm_dist_bcast(NULL, &t, 0, 0), TDM_EINVAL);
    assert_int_equal(tdm_dist_bcast(g_d, NULL, 0, 0), TDM_EINVAL);
    assert_int_equal(tdm_dist_bcast(g_d, &t, g_size, 0), TDM_EINVAL);
    tdm_tensor *none = NULL;
    assert_int_equal(tdm_dist_bcast(g_d, &none, 0, 0), TDM_EINVAL); /* root has no tensor */
    assert_null(none);
    tdm_tensor_release(bad);
    tdm_tensor_release(u);
    tdm_tensor_release(ref);
    tdm_tensor_release(t);
}

static void test_scatter_gather_roundtrip(void **state)
{
    (void)state;
    const int64_t n = 333;
    tdm_tensor *g = g_rank == 0 ? make_f64(n, 2, val) : NULL;
    tdm_tensor *l = NULL, *back = NULL;
    assert_int_equal(tdm_dist_scatter(g_d, g, NULL, NULL, 0, TDM_MEM_HOST, &l), 0);
    int64_t rows[64];
    assert_int_equal(tdm_dist_split(g_d, n, NULL, rows), 0);
    assert_int_equal(tdm_tensor_dim(l, 0), rows[g_rank]);
    assert_int_equal(tdm_dist_gather(g_d, l, -1, TDM_MEM_HOST, &back), 0);
    tdm_tensor *ref = make_f64(n, 2, val);
    assert_same(back, ref);
    /* rows that do not add up fail on every rank */
    int64_t wrong[64] = {0};
    wrong[0] = n + 1;
    tdm_tensor *l2 = NULL;
    assert_int_equal(tdm_dist_scatter(g_d, g, wrong, NULL, 0, 0, &l2), TDM_EINVAL);
    assert_null(l2);
    /* a rank with another row shape fails the gather on every rank */
    tdm_tensor *odd = make_f64(3, g_rank == g_size - 1 && g_size > 1 ? 3 : 2, val), *og = NULL;
    assert_int_equal(tdm_dist_gather(g_d, odd, 0, 0, &og), g_size > 1 ? TDM_ESHAPE : 0);
    tdm_tensor_release(og);
    assert_int_equal(tdm_dist_gather(g_d, NULL, 0, 0, &og), TDM_EINVAL);
    assert_int_equal(tdm_dist_gather(g_d, odd, g_size, 0, &og), TDM_EINVAL);
    assert_int_equal(tdm_dist_scatter(g_d, g, NULL, NULL, -1, 0, &l2), TDM_EINVAL);
    assert_int_equal(tdm_dist_split(g_d, -1, NULL, rows), TDM_EINVAL);
    assert_int_equal(tdm_dist_split(NULL, 5, NULL, rows), TDM_EINVAL);
    tdm_tensor_release(odd);
    tdm_tensor_release(ref);
    tdm_tensor_release(back);
    tdm_tensor_release(l);
    tdm_tensor_release(g);
}

/* ---- parallel_for: every item exactly once, global numbering --------------------------- */

typedef struct {
    uint8_t *seen;
    long sleep_us, slow_us; /* per item; slow_us on the last rank */
    int64_t fail_from;      /* the last rank fails items >= this; -1 never */
} pf_params;

static int pf_body(const void *p, int64_t b, int64_t e, tdm_task *task)
{
    (void)task;
    const pf_params *q = p;
    bool last = g_rank == g_size - 1;
    for (int64_t i = b; i < e; i++) {
        if (last && q->fail_from >= 0 && i >= q->fail_from)
            return TDM_EKERNEL;
        long us = last ? q->slow_us : q->sleep_us;
        if (us) {
            struct timespec ts = {0, us * 1000};
            nanosleep(&ts, NULL);
        }
        q->seen[i]++;
    }
    return 0;
}

static char g_msg[512]; /* the last run_pf's message */

static tdm_tensor *run_pf(int64_t n, long us, long slow_us, int64_t fail_from,
                          const tdm_dist_opts *o, tdm_dist_report *rep, int *rc)
{
    int64_t shape[1] = {n};
    tdm_tensor *seen = NULL, *all = NULL;
    assert_int_equal(tdm_tensor_zeros(g_rt, TDM_U8, 1, shape, TDM_MEM_HOST, &seen), 0);
    pf_params p = {tdm_tensor_data(seen), us, slow_us, fail_from};
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.desc = "pf_test";
    *rc = tdm_dist_parallel_for(g_d, n, pf_body, &p, sizeof p, &mo, o, rep);
    snprintf(g_msg, sizeof g_msg, "%s", *rc ? tdm_errmsg(g_rt) : "");
    /* the ranks' marks, side by side: [size * n] */
    assert_int_equal(tdm_dist_gather(g_d, seen, -1, 0, &all), 0);
    tdm_tensor_release(seen);
    return all;
}

static void test_parallel_for_each_item_once(void **state)
{
    (void)state;
    const int64_t n = 5000;
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.min_chunk = 16;
    int rc;
    tdm_tensor *all = run_pf(n, 0, 0, -1, &o, &rep, &rc);
    assert_int_equal(rc, 0);
    const uint8_t *s = tdm_tensor_data(all);
    for (int64_t i = 0; i < n; i++) {
        int c = 0;
        for (int r = 0; r < g_size; r++)
            c += s[(int64_t)r * n + i];
        assert_int_equal(c, 1);
    }
    int64_t items = 0;
    for (int r = 0; r < g_size; r++)
        items += rep.ranks[r].items;
    assert_int_equal(items, n);
    assert_string_equal(rep.what, "pf_test");
    tdm_tensor_release(all);
    /* zero items: nothing runs */
    assert_int_equal(tdm_dist_parallel_for(g_d, 0, pf_body, NULL, 0, NULL, NULL, NULL), 0);
}

/* The last rank is 4x slower: it must get a share near its speed, not an equal one. */
static void test_uneven_ranks_split_by_speed(void **state)
{
    (void)state;
    const int64_t n = 240 * (int64_t)g_size;
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    for (int round = 0; round < 2; round++) {
        tdm_dist_report rep = TDM_DIST_REPORT_INIT;
        int rc;
        tdm_tensor *all = run_pf(n, 500, 2000, -1, &o, &rep, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(rep.items, n);
        if (g_size > 1) {
            /* ideal share of the slow rank: 1 / (4 (size - 1) + 1) */
            double ideal = 1.0 / (4.0 * (g_size - 1) + 1.0);
            double got = (double)rep.ranks[g_size - 1].items / (double)n;
            double equal = 1.0 / g_size;
            if (g_rank == 0)
                print_message("round %d: slow rank share %.3f (ideal %.3f, equal %.3f), "
                              "%lld steals, wall %.3f s, ideal %.3f s\n",
                              round, got, ideal, equal, (long long)rep.steals, rep.wall_s,
                              (double)n / (2000.0 * (g_size - 1) + 500.0));
            assert_true(got < (ideal + equal) / 2);
        }
        tdm_tensor_release(all);
    }
}

static void test_rank_failure_reported_on_root(void **state)
{
    (void)state;
    const int64_t n = 200 * (int64_t)g_size;
    tdm_dist_report rep = TDM_DIST_REPORT_INIT;
    int rc;
    /* the last rank fails every item of the second half it touches */
    tdm_tensor *all = run_pf(n, 200, 200, 0, NULL, &rep, &rc);
    assert_int_equal(rc, TDM_EKERNEL);
    assert_int_equal(rep.status, TDM_EKERNEL);
    char want[32];
    snprintf(want, sizeof want, "rank %d", g_size - 1);
    if (!strstr(g_msg, want))
        fail_msg("message lacks '%s': %s", want, g_msg);
    assert_int_equal(rep.ranks[g_size - 1].status, TDM_EKERNEL);
    assert_true(rep.items < n);
    tdm_tensor_release(all);
}

static void test_calls_must_match(void **state)
{
    (void)state;
    /* the last rank asks for one item more */
    int64_t n = 100 + (g_size > 1 && g_rank == g_size - 1 ? 1 : 0);
    uint8_t seen[128] = {0};
    pf_params p = {seen, 0, 0, -1};
    int rc = tdm_dist_parallel_for(g_d, n, pf_body, &p, sizeof p, NULL, NULL, NULL);
    if (g_size > 1) {
        assert_int_equal(rc, TDM_EINVAL);
        char want[48];
        snprintf(want, sizeof want, "rank %d's call differs", g_size - 1);
        assert_non_null(strstr(tdm_errmsg(g_rt), want));
    } else {
        assert_int_equal(rc, 0);
    }
    /* one rank's bad argument fails every rank, naming it */
    rc = tdm_dist_parallel_for(g_d, 10, g_rank == g_size - 1 ? NULL : pf_body, &p, sizeof p, NULL,
                               NULL, NULL);
    assert_int_equal(rc, TDM_EINVAL);
    if (g_rank != g_size - 1) {
        char want[32];
        snprintf(want, sizeof want, "rank %d", g_size - 1);
        assert_non_null(strstr(tdm_errmsg(g_rt), want));
    }
}

static void test_bad_arguments_fail_everywhere(void **state)
{
    (void)state;
    tdm_tensor *x = make_f64(10, 0, val), *y = make_f64(10, 0, NULL), *z = make_f64(9, 0, NULL);
    assert_int_equal(tdm_dist_map(NULL, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, NULL, NULL),
                     TDM_EINVAL);
    assert_int_equal(tdm_dist_map(g_d, NULL, &x, 1, &y, 1, NULL, 0, NULL, NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_dist_map(g_d, "no_such", &x, 1, &y, 1, NULL, 0, NULL, NULL, NULL),
                     TDM_ENOTFOUND);
    assert_int_equal(tdm_dist_map(g_d, "exp_sinh", &x, 1, &z, 1, NULL, 0, NULL, NULL, NULL),
                     TDM_ESHAPE);
    assert_int_equal(tdm_dist_map(g_d, "exp_sinh", &x, 2, &y, 1, NULL, 0, NULL, NULL, NULL),
                     TDM_EINVAL);
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.size = 4;
    assert_int_equal(tdm_dist_map(g_d, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, &o, NULL),
                     TDM_EINVAL);
    tdm_dist_opts o2 = TDM_DIST_OPTS_INIT;
    o2.gather = 7;
    assert_int_equal(tdm_dist_map(g_d, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, &o2, NULL),
                     TDM_EINVAL);
    o2 = (tdm_dist_opts)TDM_DIST_OPTS_INIT;
    o2.layout = TDM_DIST_PARTITIONED;
    assert_int_equal(tdm_dist_parallel_for(g_d, 5, pf_body, NULL, 0, NULL, &o2, NULL), TDM_EINVAL);
    tdm_dist_report small = {.size = 8};
    assert_int_equal(tdm_dist_map(g_d, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, NULL, &small),
                     TDM_EINVAL);
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.version = 99;
    assert_int_equal(tdm_dist_map(g_d, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, NULL),
                     TDM_EINVAL);
    assert_int_equal(tdm_dist_parallel_for(g_d, -1, pf_body, NULL, 0, NULL, NULL, NULL),
                     TDM_EINVAL);
    tdm_dist *d2 = NULL;
    assert_int_equal(tdm_dist_open(NULL, g_rt, NULL), TDM_EINVAL);
    assert_int_equal(tdm_dist_open(&d2, NULL, NULL), TDM_EINVAL);
    tdm_dist_config bad = TDM_DIST_CONFIG_INIT;
    bad.version = 9;
    assert_int_equal(tdm_dist_open(&d2, g_rt, &bad), TDM_EINVAL);
    assert_null(d2);
    assert_int_equal(tdm_dist_close(NULL), 0);
    assert_int_equal(tdm_dist_size(NULL), 0);
    assert_int_equal(tdm_dist_report_format(NULL, NULL, 0), TDM_EINVAL);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(z);
}

/* An MPI error comes back as TDM_ECOMM with MPI's text, never as an abort. */
static void test_mpi_error_is_a_status(void **state)
{
    (void)state;
    double v = 1.0;
    if (tdm_dist_is_mpi(g_d)) {
        /* a rank that does not exist: MPI_ERR_RANK from MPI_Send */
        int rc = tdm__dcomm_send(g_d, &v, sizeof v, g_size + 5, 1);
        assert_int_equal(rc, TDM_ECOMM);
        if (!strstr(tdm_errmsg(g_rt), "MPI failed on rank"))
            fail_msg("message: %s", tdm_errmsg(g_rt));
        assert_int_equal(tdm__dcomm_recv(g_d, &v, sizeof v, -7, 1), TDM_ECOMM);
    } else {
        /* a single rank has no one to talk to: a clear error, not a crash */
        assert_int_equal(tdm__dcomm_send(g_d, &v, sizeof v, 1, 1), TDM_EINVAL);
        assert_int_equal(tdm__dcomm_recv(g_d, &v, sizeof v, 1, 1), TDM_EINVAL);
        assert_non_null(strstr(tdm_errmsg(g_rt), "single rank"));
    }
}

typedef struct {
    int calls, finals, n_workers;
    int64_t done, total, per_sum;
} prog_seen;

static void on_progress(const tdm_progress *p, void *user)
{
    prog_seen *s = user;
    s->calls++;
    s->finals += p->final;
    s->done = p->done;
    s->total = p->total;
    s->n_workers = p->n_workers;
    s->per_sum = 0;
    for (int i = 0; i < p->n_workers; i++)
        s->per_sum += p->per_worker[i];
}

static void test_progress_counts_every_rank(void **state)
{
    (void)state;
    const int64_t n = 400;
    int64_t shape[1] = {n};
    tdm_tensor *seen = NULL;
    assert_int_equal(tdm_tensor_zeros(g_rt, TDM_U8, 1, shape, 0, &seen), 0);
    pf_params p = {tdm_tensor_data(seen), 300, 300, -1};
    prog_seen ps = {0};
    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.progress = TDM_PROGRESS_CALLBACK;
    mo.progress_fn = on_progress;
    mo.progress_user = &ps;
    mo.progress_interval_s = 0.01;
    assert_int_equal(tdm_dist_parallel_for(g_d, n, pf_body, &p, sizeof p, &mo, NULL, NULL), 0);
    if (g_rank == 0 || g_size == 1) {
        assert_true(ps.calls >= 2);
        assert_int_equal(ps.finals, 1);
        assert_int_equal(ps.done, n);
        assert_int_equal(ps.total, n);
        assert_int_equal(ps.per_sum, n);
        assert_int_equal(ps.n_workers, g_size > 1 ? g_size : ps.n_workers);
    } else {
        assert_int_equal(ps.calls, 0); /* only rank 0 shows progress */
    }
    tdm_tensor_release(seen);
}

static void test_trace_has_a_lane_group_per_rank(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "dist_trace_%d.json", g_size);
    if (g_rank == 0)
        unlink(path);
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    cfg.backends = "cpu";
    cfg.trace_path = path;
    tdm_runtime *rt = NULL;
    assert_int_equal(tdm_runtime_open(&rt, &cfg), 0);
    tdm_dist *d = NULL;
    assert_int_equal(tdm_dist_open(&d, rt, NULL), 0);
    int64_t shape[1] = {300};
    tdm_tensor *y = NULL;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, shape, 0, &y), 0);
    tdm_pi_params pp = {20000};
    tdm_dist_opts o = TDM_DIST_OPTS_INIT;
    o.min_chunk = 10;
    assert_int_equal(tdm_dist_map(d, "pi_leibniz", NULL, 0, &y, 1, &pp, sizeof pp, NULL, &o, NULL),
                     0);
    tdm_tensor_release(y);
    assert_int_equal(tdm_dist_close(d), 0);
    assert_int_equal(tdm_runtime_close(rt), 0);
    if (g_rank == 0) {
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        static char buf[1 << 20];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        buf[len] = '\0';
        fclose(f);
        for (int r = 0; r < g_size; r++) {
            char want[48];
            snprintf(want, sizeof want, g_size > 1 ? "\"rank %d (" : "\"tandem\"", r);
            if (!strstr(buf, want))
                fail_msg("trace lacks %s", want);
        }
        if (g_size > 1)
            assert_non_null(strstr(buf, "chunks (distributed)"));
    }
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_reports_rank_and_size),
        cmocka_unit_test(test_map_every_kernel_replicated_and_partitioned),
        cmocka_unit_test(test_map_partitioned_results_come_home),
        cmocka_unit_test(test_worker_processes_on_every_rank),
        cmocka_unit_test(test_bcast_replicates_payload),
        cmocka_unit_test(test_scatter_gather_roundtrip),
        cmocka_unit_test(test_parallel_for_each_item_once),
        cmocka_unit_test(test_uneven_ranks_split_by_speed),
        cmocka_unit_test(test_rank_failure_reported_on_root),
        cmocka_unit_test(test_calls_must_match),
        cmocka_unit_test(test_bad_arguments_fail_everywhere),
        cmocka_unit_test(test_mpi_error_is_a_status),
        cmocka_unit_test(test_progress_counts_every_rank),
        cmocka_unit_test(test_trace_has_a_lane_group_per_rank),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return _cmocka_run_group_tests("dist", tests, sizeof tests / sizeof tests[0], group_setup,
                                   group_teardown);
}
