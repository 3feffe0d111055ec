/* SPDX-License-Identifier: MIT */
/* Flat memory: results larger than the memory they pass through. CTest names
 * io_streaming_<behaviour>. */
#include "io_test_util.h"

/* ---- flat memory: results larger than the memory they pass through ----------------------- */

/* "flat_gen": u8 x [N] -> f64 y [N, 16], y[r][c] = r * 16 + c + x[r] / 4: 128 output bytes per
 * input byte, so a small input makes a large result. */
#define FLAT_COLS 16

static double flat_value(int64_t row, int64_t col, unsigned char x)
{
    return (double)(row * FLAT_COLS + col) + 0.25 * x;
}

static unsigned char flat_input(int64_t row)
{
    return (unsigned char)(row * 131 % 251);
}

static int infer_flat_gen(const tdm_tensor *const *in, int n_in, const void *params,
                          size_t params_size, tdm_tensor_desc *out, int n_out, char *msg,
                          size_t len)
{
    (void)params;
    (void)params_size;
    if (n_in != 1 || n_out != 1 || tdm_tensor_dtype(in[0]) != TDM_U8 ||
        tdm_tensor_ndim(in[0]) != 1) {
        snprintf(msg, len, "flat_gen: one u8 [N] input");
        return TDM_EINVAL;
    }
    out[0].dtype = TDM_F64;
    out[0].ndim = 2;
    out[0].shape[0] = tdm_tensor_dim(in[0], 0);
    out[0].shape[1] = FLAT_COLS;
    return 0;
}

static int cpu_flat_gen(const tdm_kernel_args *a)
{
    const unsigned char *x = a->in[0];
    double *y = a->out[0];
    for (int64_t r = a->begin; r < a->end; r++)
        for (int c = 0; c < FLAT_COLS; c++)
            y[(r - a->begin) * FLAT_COLS + c] = flat_value(r, c, x[r - a->begin]);
    return 0;
}

/* A field of /proc/self/status in kB ("VmHWM:", "RssAnon:", "RssFile:"), -1 when absent. */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0) {
            v = strtol(line + n, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0); without it the growth is measured from the
 * (small) high-water mark inherited at fork. */
static void reset_peak_rss(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1) {
        }
        close(fd);
    }
}

/* Anonymous memory is what must stay flat while a file-backed mapping is written (its pages
 * are the file's, reclaimable): no counter keeps RssAnon's peak, so a thread samples it. */
typedef struct anon_sampler {
    atomic_int stop;
    long peak_kb;
} anon_sampler;

static void *sample_anon(void *p)
{
    anon_sampler *s = p;
    while (!atomic_load(&s->stop)) {
        long v = status_kb("RssAnon:");
        if (v > s->peak_kb)
            s->peak_kb = v;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

typedef struct flat_result {
    int line; /* 0: every check passed; else the line of the first that failed */
    int code; /* the tandem code of a failed call */
    long data_kb;
    long npy_save_growth_kb, tdz_save_growth_kb; /* VmHWM growth during each tdm_job_save */
    long load_anon_growth_kb, load_file_kb;      /* tdz -> mapped .npy: RssAnon peak growth */
} flat_result;

#define FLAT_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            res->line = __LINE__;                                                                  \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
#define FLAT_OK(call)                                                                              \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            res->code = rc_;                                                                       \
            res->line = __LINE__;                                                                  \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Runs in a forked child (its own peak RSS): no cmocka assertions here, only res. */
static void flat_child(int64_t rows, flat_result *res)
{
    tdm_runtime *rt = NULL;
    tdm_tensor *x = NULL, *m = NULL;
    double *chunk = NULL;
    int fd = -1;
    char files[3][256];
    snprintf(files[0], sizeof files[0], "%s/flat.npy", g_dir);
    snprintf(files[1], sizeof files[1], "%s/flat.tdz", g_dir);
    snprintf(files[2], sizeof files[2], "%s/flat_back.npy", g_dir);
    int64_t shape[2] = {rows, FLAT_COLS};
    const int64_t chunk_rows = 8192;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 2;
    cfg.use_env = 0;
    FLAT_OK(tdm_runtime_open(&rt, &cfg));
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "flat_gen";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.infer = infer_flat_gen;
    def.cpu = cpu_flat_gen;
    FLAT_OK(tdm_kernel_register(rt, &def));
    FLAT_OK(tdm_tensor_empty(rt, TDM_U8, 1, &rows, 0, &x));
    unsigned char *xd = tdm_tensor_data(x);
    for (int64_t r = 0; r < rows; r++)
        xd[r] = flat_input(r);
    /* A streaming map drained into a .npy writer (batches in completion order, written at
     * their rows) and into an lz4 writer (submission order). */
    for (int k = 0; k < 2; k++) {
        tdm_map_opts mo = quiet(16384);
        mo.max_in_flight = 4;
        mo.order = k == 0 ? TDM_ORDER_COMPLETION : TDM_ORDER_SUBMISSION;
        tdm_save_opts so = TDM_SAVE_OPTS_INIT;
        so.codec = k == 0 ? TDM_CODEC_NONE : TDM_CODEC_LZ4;
        reset_peak_rss();
        long before = status_kb("VmHWM:");
        tdm_job *job;
        FLAT_OK(tdm_map_async(rt, "flat_gen", &x, 1, NULL, 1, NULL, 0, &mo, &job));
        tdm_writer *w;
        int rc = tdm_writer_open(rt, files[k], TDM_F64, 2, shape, &so, &w);
        if (rc != 0) {
            tdm_job_free(job);
            FLAT_OK(rc);
        }
        tdm_report rep = TDM_REPORT_INIT;
        rc = tdm_job_save(job, &w, 1, &rep);
        tdm_job_free(job);
        int rc2 = tdm_writer_close(w);
        FLAT_OK(rc);
        FLAT_OK(rc2);
        FLAT_CHECK(rep.items == rows);
        long after = status_kb("VmHWM:");
        FLAT_CHECK(before > 0 && after > 0);
        if (k == 0)
            res->npy_save_growth_kb = after - before;
        else
            res->tdz_save_growth_kb = after - before;
    }
    /* The .npy, read back a chunk at a time: every element. */
    tdm_file_info fi;
    FLAT_OK(tdm_file_info_get(rt, files[0], &fi));
    FLAT_CHECK(fi.kind == TDM_FILE_NPY && fi.dtype == TDM_F64 && fi.ndim == 2 &&
               fi.shape[0] == rows && fi.shape[1] == FLAT_COLS && !fi.fortran_order);
    FLAT_CHECK(fi.file_bytes == fi.data_offset + rows * FLAT_COLS * 8);
    chunk = malloc((size_t)chunk_rows * FLAT_COLS * sizeof(double));
    FLAT_CHECK(chunk != NULL);
    fd = open(files[0], O_RDONLY | O_CLOEXEC);
    FLAT_CHECK(fd >= 0);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
        int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
        size_t nb = (size_t)nr * FLAT_COLS * sizeof(double);
        FLAT_CHECK(pread(fd, chunk, nb, (off_t)(fi.data_offset + r0 * FLAT_COLS * 8)) ==
                   (ssize_t)nb);
        for (int64_t r = 0; r < nr; r++)
            for (int c = 0; c < FLAT_COLS; c++)
                FLAT_CHECK(chunk[r * FLAT_COLS + c] == flat_value(r0 + r, c, flat_input(r0 + r)));
    }
    close(fd);
    fd = -1;
    /* The compressed file decompressed into a mapped .npy (the out-of-core read). */
    FLAT_OK(tdm_npy_create(rt, files[2], TDM_F64, 2, shape, &m));
    anon_sampler smp;
    atomic_init(&smp.stop, 0);
    long anon_before = status_kb("RssAnon:");
    smp.peak_kb = anon_before;
    pthread_t th;
    FLAT_CHECK(anon_before > 0 && pthread_create(&th, NULL, sample_anon, &smp) == 0);
    int lrc = tdm_load_into(rt, files[1], m);
    long anon_after = status_kb("RssAnon:");
    atomic_store(&smp.stop, 1);
    pthread_join(th, NULL);
    FLAT_OK(lrc);
    if (anon_after > smp.peak_kb)
        smp.peak_kb = anon_after;
    res->load_anon_growth_kb = smp.peak_kb - anon_before;
    res->load_file_kb = status_kb("RssFile:");
    const double *md = tdm_tensor_data(m);
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < FLAT_COLS; c++)
            FLAT_CHECK(md[r * FLAT_COLS + c] == flat_value(r, c, flat_input(r)));
done:
    if (fd >= 0)
        close(fd);
    free(chunk);
    tdm_tensor_release(m);
    tdm_tensor_release(x);
    if (rt)
        tdm_runtime_close(rt);
    for (int i = 0; i < 3; i++)
        unlink(files[i]);
}

/* A streaming map of 256 MiB of results saved to .npy and to an lz4 file, and the lz4 file
 * read back into a mapped .npy, in a child process whose memory is watched: the peak RSS
 * grows by far less than the data (ring buffers, a few chunks), and every element is right. */
static void test_save_and_load_keep_memory_flat(void **state)
{
    (void)state;
    mk_tmpdir();
    /* 2 Mi rows x 128 bytes = 256 MiB (64 MiB under sanitizers, which only check the data). */
    int64_t rows = TDM_TEST_SANITIZED ? (int64_t)1 << 19 : (int64_t)1 << 21;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        flat_result r;
        memset(&r, 0, sizeof r);
        r.data_kb = (long)(rows * FLAT_COLS * 8 / 1024);
        flat_child(rows, &r);
        _exit(write(pfd[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
    }
    close(pfd[1]);
    flat_result r;
    memset(&r, 0, sizeof r);
    ssize_t got = read(pfd[0], &r, sizeof r);
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    rm_tmpdir();
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(got, (ssize_t)sizeof r);
    if (r.line != 0)
        fail_msg("flat-memory child: check at line %d failed (code %d)", r.line, r.code);
    print_message("flat memory: %ld MiB of results; peak RSS growth while streaming them to .npy "
                  "%ld KiB, to lz4 %ld KiB; lz4 -> mapped .npy: anonymous peak growth %ld KiB "
                  "(file-backed pages resident after: %ld KiB)%s\n",
                  r.data_kb / 1024, r.npy_save_growth_kb, r.tdz_save_growth_kb,
                  r.load_anon_growth_kb, r.load_file_kb,
                  TDM_TEST_SANITIZED ? " [sanitizer build: memory not asserted]" : "");
    if (!TDM_TEST_SANITIZED) {
        assert_true(r.npy_save_growth_kb < r.data_kb / 4);
        assert_true(r.tdz_save_growth_kb < r.data_kb / 4);
        assert_true(r.load_anon_growth_kb < r.data_kb / 4);
    }
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_and_load_keep_memory_flat),
    };
    return TDM_TEST_MAIN("io_streaming", tests);
}
