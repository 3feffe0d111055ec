/* SPDX-License-Identifier: MIT */
/* The result cache: hits and misses, keys, mapped and compressed entries, corrupted and
 * truncated entries, LRU eviction, clear, concurrent writers (threads and processes), errors. */
#include "cache_test_util.h"

/* ---- hits and misses -------------------------------------------------------------------- */

static void test_miss_then_hit(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_cache *c = open_cache(rt, NULL);
    tdm_tensor *x = input(rt, 10000, 1.0), *y = NULL, *y2 = NULL;
    tdm_map_opts mo = quiet();
    tdm_report rep = TDM_REPORT_INIT;
    int hit = -1;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, &rep, &hit), 0);
    assert_int_equal(hit, 0);
    assert_int_equal(rep.items, 10000);
    expect_exp_sinh(x, y);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y2, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    assert_memory_equal(tdm_tensor_data(y), tdm_tensor_data(y2), 10000 * 8);
    assert_false(tdm_tensor_mem(y2) & TDM_MEM_MAPPED);
    /* Outputs given by the caller are filled on a hit too. */
    tdm_tensor *z;
    int64_t n = 10000;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &z), 0);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &z, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    assert_memory_equal(tdm_tensor_data(y), tdm_tensor_data(z), 10000 * 8);
    tdm_cache_stats st;
    assert_int_equal(tdm_cache_stats_get(c, &st), 0);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.stores, 1);
    assert_int_equal(st.corrupt, 0);
    uint64_t bytes;
    int64_t entries;
    assert_int_equal(tdm_cache_usage(c, &bytes, &entries), 0);
    assert_int_equal(entries, 1);
    assert_true(bytes > 80000);
    /* A hit survives the handle and the runtime: a new one finds the entry. */
    tdm_cache_close(c);
    c = open_cache(rt, NULL);
    tdm_tensor *y3 = NULL;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y3, 1, NULL, 0, NULL, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    expect_exp_sinh(x, y3);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_tensor_release(y2);
    tdm_tensor_release(y3);
    tdm_tensor_release(z);
    tdm_cache_close(c);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_key_covers_inputs_params_outputs_and_version(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    tdm_cache *c = open_cache(rt, NULL);
    tdm_tensor *x = input(rt, 100, 1.0), *x2 = input(rt, 100, 1.0), *x3 = input(rt, 100, 1.0);
    ((double *)tdm_tensor_data(x3))[99] += 1e-9;
    char k1[33], k2[33], k3[33], k4[33], k5[33], k6[33];
    tdm_tensor *nulls[1] = {NULL};
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, NULL, 1, NULL, 0, k1), TDM_EINVAL);
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, nulls, 1, NULL, 0, k1), 0);
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x2, 1, nulls, 1, NULL, 0, k2), 0);
    assert_string_equal(k1, k2); /* same bytes, another tensor: same key */
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x3, 1, nulls, 1, NULL, 0, k3), 0);
    assert_string_not_equal(k1, k3); /* one ulp-ish change in one input */
    tdm_scale_shift_params p1 = {2.0, 1.0}, p2 = {2.0, 1.5};
    assert_int_equal(tdm_cache_key(c, "scale_shift", &x, 1, nulls, 1, &p1, sizeof p1, k4), 0);
    assert_int_equal(tdm_cache_key(c, "scale_shift", &x, 1, nulls, 1, &p2, sizeof p2, k5), 0);
    assert_string_not_equal(k4, k5);
    assert_string_not_equal(k1, k4);
    /* An output of another dtype (given by the caller) is another key. */
    tdm_tensor *y32;
    int64_t n = 100;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F32, 1, &n, 0, &y32), 0);
    if (tdm_cache_key(c, "scale_shift", &x, 1, &y32, 1, &p1, sizeof p1, k6) != 0)
        fail_msg("%s", tdm_errmsg(rt));
    assert_string_not_equal(k4, k6);
    for (int i = 0; i < 32; i++)
        assert_true(strchr("0123456789abcdef", k1[i]) != NULL);
    assert_int_equal(strlen(k1), 32);
    /* The kernel's version: the same name registered as version 1 and 2 in two runtimes. */
    tdm_runtime *rt2 = tdm_test_open(1);
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "user_k";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.cpu = (tdm_kernel_cpu_fn)(uintptr_t)1; /* never called */
    def.kernel_version = 1;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    def.kernel_version = 2;
    assert_int_equal(tdm_kernel_register(rt2, &def), 0);
    tdm_cache *c2;
    assert_int_equal(tdm_cache_open(rt2, P("cache"), NULL, &c2), 0);
    tdm_tensor *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y), 0);
    tdm_tensor *x_b = input(rt2, 100, 1.0), *y_b;
    assert_int_equal(tdm_tensor_empty(rt2, TDM_F64, 1, &n, 0, &y_b), 0);
    assert_int_equal(tdm_cache_key(c, "user_k", &x, 1, &y, 1, NULL, 0, k5), 0);
    assert_int_equal(tdm_cache_key(c2, "user_k", &x_b, 1, &y_b, 1, NULL, 0, k6), 0);
    assert_string_not_equal(k5, k6);
    /* Without infer, NULL outputs cannot be created. */
    assert_int_equal(tdm_cache_key(c, "user_k", &x, 1, nulls, 1, NULL, 0, k5), TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "infer"));
    tdm_tensor_release(x_b);
    tdm_tensor_release(y_b);
    tdm_cache_close(c2);
    tdm_test_close(rt2);
    tdm_tensor_release(y);
    tdm_tensor_release(y32);
    tdm_tensor_release(x);
    tdm_tensor_release(x2);
    tdm_tensor_release(x3);
    tdm_cache_close(c);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_mapped_and_compressed_entries(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *x = input(rt, 50000, 1.0);
    struct {
        tdm_mmap_mode m;
        tdm_codec codec;
        int verify;
    } v[] = {{TDM_MMAP_READ, TDM_CODEC_NONE, 1},
             {TDM_MMAP_COPY, TDM_CODEC_NONE, 0},
             {TDM_MMAP_NONE, TDM_CODEC_ZSTD, 1},
             {TDM_MMAP_NONE, TDM_CODEC_LZ4, 1},
             {TDM_MMAP_NONE, TDM_CODEC_DEFLATE, 0}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
        o.mmap = v[i].m;
        o.codec = v[i].codec;
        o.verify = v[i].verify;
        o.fsync = i == 0;
        tdm_cache *c = open_cache(rt, &o);
        assert_int_equal(tdm_cache_clear(c), 0);
        tdm_tensor *y = NULL, *y2 = NULL;
        int hit;
        tdm_map_opts mo = quiet();
        assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
        assert_int_equal(hit, 0);
        assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y2, 1, NULL, 0, &mo, NULL, &hit), 0);
        assert_int_equal(hit, 1);
        if (v[i].m != TDM_MMAP_NONE)
            assert_true(tdm_tensor_mem(y2) & TDM_MEM_MAPPED);
        expect_exp_sinh(x, y2);
        uint64_t bytes;
        assert_int_equal(tdm_cache_usage(c, &bytes, NULL), 0);
        if (v[i].codec != TDM_CODEC_NONE)
            assert_true(bytes < 50000 * 8);
        tdm_tensor_release(y);
        tdm_tensor_release(y2);
        tdm_cache_close(c);
    }
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- corruption ------------------------------------------------------------------------- */

static void corrupt_and_expect_miss(tdm_runtime *rt, tdm_cache *c, tdm_tensor *x,
                                    void (*damage)(const char *key), int64_t *corrupt_seen)
{
    char key[33];
    tdm_tensor *nulls[1] = {NULL};
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, nulls, 1, NULL, 0, key), 0);
    assert_int_equal(tdm_cache_contains(c, key), 1);
    damage(key);
    tdm_tensor *y = NULL;
    int hit;
    tdm_map_opts mo = quiet();
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 0); /* never the damaged bytes */
    expect_exp_sinh(x, y);
    tdm_tensor_release(y);
    y = NULL;
    tdm_cache_stats st;
    tdm_cache_stats_get(c, &st);
    assert_int_equal(st.corrupt, *corrupt_seen + 1);
    *corrupt_seen = st.corrupt;
    /* Replaced: the next call is a hit again. */
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    expect_exp_sinh(x, y);
    tdm_tensor_release(y);
    (void)rt;
}

static void test_corrupted_or_truncated_entry_is_a_miss(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *x = input(rt, 5000, 1.0), *y = NULL;
    int64_t seen = 0;
    for (int mapped = 0; mapped < 2; mapped++) {
        tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
        o.mmap = mapped ? TDM_MMAP_READ : TDM_MMAP_NONE;
        tdm_cache *c = open_cache(rt, &o);
        seen = 0;
        int hit;
        tdm_map_opts mo = quiet();
        assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
        tdm_tensor_release(y);
        y = NULL;
        corrupt_and_expect_miss(rt, c, x, flip_data_byte, &seen);
        corrupt_and_expect_miss(rt, c, x, truncate_output, &seen);
        corrupt_and_expect_miss(rt, c, x, flip_manifest, &seen);
        corrupt_and_expect_miss(rt, c, x, damage_header, &seen);
        /* A missing output file: a miss; counted as corrupt (the manifest promised it). */
        corrupt_and_expect_miss(rt, c, x, remove_output, &seen);
        tdm_cache_close(c);
    }
    /* With outputs given by the caller: the damaged bytes land in them, then are recomputed. */
    tdm_cache *c = open_cache(rt, NULL);
    char key[33];
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, (tdm_tensor *[]){NULL}, 1, NULL, 0, key),
                     0);
    flip_data_byte(key);
    int64_t n = 5000;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, &n, 0, &y), 0);
    int hit;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, NULL, &hit), 0);
    assert_int_equal(hit, 0);
    expect_exp_sinh(x, y);
    tdm_tensor_release(y);
    tdm_cache_close(c);
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- header damage that keeps the file's size (edits: cache_test_util.h) ---------------- */

/* For each header edit (and each again with the manifest re-signed to agree with it): the
 * damaged entry is a miss, the result is recomputed and correct, the entry is counted as
 * corrupt and replaced by a good one, which the next call hits. */
static void header_damage_rounds(int verify)
{
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *x = input_2d(rt);
    tdm_map_opts mo = quiet();
    for (int mapped = 0; mapped < 2; mapped++)
        for (int given = 0; given < 2; given++) {
            tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
            o.mmap = mapped ? TDM_MMAP_READ : TDM_MMAP_NONE;
            o.verify = verify;
            tdm_cache *c = open_cache(rt, &o);
            assert_int_equal(tdm_cache_clear(c), 0);
            char key[33];
            assert_int_equal(
                tdm_cache_key(c, "exp_sinh", &x, 1, (tdm_tensor *[]){NULL}, 1, NULL, 0, key), 0);
            tdm_tensor *y = NULL;
            int hit;
            assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit),
                             0);
            assert_int_equal(hit, 0);
            tdm_tensor_release(y);
            int64_t corrupt = 0;
            for (size_t e = 0; e < sizeof k_header_edits / sizeof k_header_edits[0]; e++)
                for (int resign = 0; resign < 1 + k_header_edits[e].structural; resign++) {
                    edit_header(key, k_header_edits[e].from, k_header_edits[e].to);
                    if (resign)
                        resign_manifest(key);
                    expect_header(rt, key, e == 0 ? TDM_I64 : TDM_F64, e == 1, e == 3,
                                  e == 2 ? HDR_COLS : HDR_ROWS, e == 2 ? HDR_ROWS : HDR_COLS);
                    y = NULL;
                    if (given) {
                        int64_t shape[2] = {HDR_ROWS, HDR_COLS};
                        assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 2, shape, 0, &y), 0);
                    }
                    hit = -1;
                    if (tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit) != 0)
                        fail_msg("%s", tdm_errmsg(rt));
                    if (hit != 0)
                        fail_msg("%s header edit (re-signed %d, mapped %d, given %d, verify %d) "
                                 "was served as a hit",
                                 k_header_edits[e].name, resign, mapped, given, verify);
                    assert_int_equal(tdm_tensor_dtype(y), TDM_F64);
                    assert_int_equal(tdm_tensor_dim(y, 0), HDR_ROWS);
                    assert_int_equal(tdm_tensor_dim(y, 1), HDR_COLS);
                    assert_true(tdm_tensor_is_contiguous(y));
                    expect_exp_sinh(x, y);
                    tdm_tensor_release(y);
                    tdm_cache_stats st;
                    assert_int_equal(tdm_cache_stats_get(c, &st), 0);
                    assert_int_equal(st.corrupt, ++corrupt);
                    /* Replaced (the cache's policy for a corrupt entry): a good header again,
                     * and the next call is a hit with the right values. */
                    assert_int_equal(tdm_cache_contains(c, key), 1);
                    expect_header(rt, key, TDM_F64, 0, 0, HDR_ROWS, HDR_COLS);
                    y = NULL;
                    assert_int_equal(
                        tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
                    assert_int_equal(hit, 1);
                    assert_true(tdm_tensor_is_contiguous(y));
                    assert_int_equal(tdm_tensor_dim(y, 0), HDR_ROWS);
                    expect_exp_sinh(x, y);
                    tdm_tensor_release(y);
                    int64_t entries;
                    assert_int_equal(tdm_cache_usage(c, NULL, &entries), 0);
                    assert_int_equal(entries, 1);
                }
            tdm_cache_close(c);
        }
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_damaged_npy_header_is_a_miss(void **state)
{
    (void)state;
    header_damage_rounds(1);
}

/* verify = 0 gives up the data checksum only: header damage is still a miss, a flipped data
 * byte is served (the documented price of the option). */
static void test_verify_off_still_checks_headers_and_shapes(void **state)
{
    (void)state;
    header_damage_rounds(0);
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
    o.verify = 0;
    tdm_cache *c = open_cache(rt, &o);
    tdm_tensor *x = input(rt, 5000, 1.0), *y = NULL;
    int hit;
    tdm_map_opts mo = quiet();
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    tdm_tensor_release(y);
    char key[33];
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, (tdm_tensor *[]){NULL}, 1, NULL, 0, key),
                     0);
    flip_data_byte(key);
    y = NULL;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    tdm_tensor_release(y);
    tdm_cache_close(c);
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* An entry written before the head hash (manifest version 1: 88 bytes per output) is never
 * served: a plain miss (not counted as corrupt), replaced by an entry of the current format. */
static void test_entry_of_older_format_is_replaced(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    tdm_cache *c = open_cache(rt, NULL);
    tdm_tensor *x = input_2d(rt), *y = NULL;
    int hit;
    tdm_map_opts mo = quiet();
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    tdm_tensor_release(y);
    char key[33], mp[600];
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, (tdm_tensor *[]){NULL}, 1, NULL, 0, key),
                     0);
    entry_file(key, "manifest", mp, sizeof mp);
    /* Rewrite the manifest as version 1 wrote it, with a header edit that v1 could not see. */
    unsigned char m[40 + 96 + 8], v1[40 + 88 + 8];
    int fd = open(mp, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, m, sizeof m), (ssize_t)sizeof m);
    close(fd);
    assert_int_equal(m[8], 2);
    memcpy(v1, m, 40 + 88);
    v1[8] = 1;
    put_le64(v1 + 40 + 88, XXH3_64bits(v1, 40 + 88));
    assert_int_equal(unlink(mp), 0);
    fd = open(mp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, v1, sizeof v1), (ssize_t)sizeof v1);
    close(fd);
    edit_header(key, "'<f8'", "'<i8'");
    for (int call = 0; call < 2; call++) {
        y = NULL;
        assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
        assert_int_equal(hit, call); /* the old entry: a miss; its replacement: a hit */
        assert_int_equal(tdm_tensor_dtype(y), TDM_F64);
        expect_exp_sinh(x, y);
        tdm_tensor_release(y);
    }
    fd = open(mp, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, m, sizeof m), (ssize_t)sizeof m);
    close(fd);
    assert_int_equal(m[8], 2);
    tdm_cache_stats st;
    assert_int_equal(tdm_cache_stats_get(c, &st), 0);
    assert_int_equal(st.corrupt, 0);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.stores, 2);
    tdm_cache_close(c);
    tdm_tensor_release(x);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- eviction and clear ----------------------------------------------------------------- */

static void test_lru_eviction_respects_bytes_limit(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    int64_t n = 10000; /* 80 KB per output */
    tdm_tensor *xs[4];
    for (int i = 0; i < 4; i++)
        xs[i] = input(rt, n, 1.0 + i);
    tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
    o.bytes_limit = 2 * 80000 + 80000 / 2; /* room for two entries */
    tdm_cache *c = open_cache(rt, &o);
    char keys[4][33];
    for (int i = 0; i < 4; i++)
        assert_int_equal(
            tdm_cache_key(c, "exp_sinh", &xs[i], 1, (tdm_tensor *[]){NULL}, 1, NULL, 0, keys[i]),
            0);
    tdm_map_opts mo = quiet();
    int hit;
    tdm_tensor *y = NULL;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tdm_cache_map(c, "exp_sinh", &xs[i], 1, &y, 1, NULL, 0, &mo, NULL, &hit),
                         0);
        tdm_tensor_release(y);
        y = NULL;
        sleep_ms(30); /* file times are coarse (a jiffy) */
    }
    /* Use entry 0: entry 1 becomes the least recently used. */
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &xs[0], 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    assert_int_equal(hit, 1);
    tdm_tensor_release(y);
    y = NULL;
    sleep_ms(30);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &xs[2], 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    tdm_tensor_release(y);
    y = NULL;
    assert_int_equal(tdm_cache_contains(c, keys[0]), 1);
    assert_int_equal(tdm_cache_contains(c, keys[1]), 0);
    assert_int_equal(tdm_cache_contains(c, keys[2]), 1);
    uint64_t bytes;
    int64_t entries;
    assert_int_equal(tdm_cache_usage(c, &bytes, &entries), 0);
    assert_true(bytes <= o.bytes_limit);
    assert_int_equal(entries, 2);
    tdm_cache_stats st;
    tdm_cache_stats_get(c, &st);
    assert_int_equal(st.evictions, 1);
    /* An entry larger than the whole limit is stored and evicted at once: no hit, no error. */
    tdm_cache_close(c);
    o.bytes_limit = 1000;
    c = open_cache(rt, &o);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &xs[3], 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    tdm_tensor_release(y);
    y = NULL;
    assert_int_equal(tdm_cache_usage(c, &bytes, &entries), 0);
    assert_int_equal(entries, 0);
    /* clear removes everything, stale temporaries included. */
    tdm_cache_close(c);
    c = open_cache(rt, NULL);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &xs[3], 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    tdm_tensor_release(y);
    assert_int_equal(mkdir(P("cache/.trash-0123"), 0700), 0);
    assert_int_equal(tdm_cache_clear(c), 0);
    assert_int_equal(tdm_cache_usage(c, &bytes, &entries), 0);
    assert_int_equal(entries, 0);
    assert_int_equal(bytes, 0);
    assert_int_not_equal(access(P("cache/.trash-0123"), F_OK), 0);
    for (int i = 0; i < 4; i++)
        tdm_tensor_release(xs[i]);
    tdm_cache_close(c);
    tdm_test_close(rt);
    rm_tmpdir();
}

static void test_directory_is_private_and_keys_are_names(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    tdm_cache *c;
    assert_int_equal(tdm_cache_open(rt, P("a/b/cache"), NULL, &c), 0);
    struct stat st;
    assert_int_equal(stat(P("a/b/cache"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(P("a"), &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);
    /* Kernel names like ".." never reach the file system: entries are hex keys. */
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "..";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 1;
    def.cpu = (tdm_kernel_cpu_fn)(uintptr_t)1;
    int reg = tdm_kernel_register(rt, &def);
    tdm_tensor *x = input(rt, 10, 1.0);
    if (reg == 0) {
        char key[33];
        tdm_tensor *y;
        int64_t n = 10;
        tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &y);
        assert_int_equal(tdm_cache_key(c, "..", &x, 1, &y, 1, NULL, 0, key), 0);
        assert_int_equal(strlen(key), 32);
        tdm_tensor_release(y);
    }
    tdm_tensor *y = NULL;
    int hit;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, NULL, &hit), 0);
    tdm_tensor_release(y);
    DIR *d = opendir(P("a/b/cache"));
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        assert_int_equal(strlen(e->d_name), 32);
        assert_int_equal(strspn(e->d_name, "0123456789abcdef"), 32);
    }
    closedir(d);
    assert_int_equal(n, 1);
    assert_int_equal(tdm_cache_contains(c, "../../etc/passwd"), TDM_EINVAL);
    assert_int_equal(tdm_cache_contains(c, "0123"), TDM_EINVAL);
    assert_int_equal(tdm_cache_contains(c, "0123456789abcdef0123456789abcdeF"), TDM_EINVAL);
    assert_int_equal(tdm_cache_contains(c, "0123456789abcdef0123456789abcdef"), 0);
    end_cache_test(rt, c, x, NULL);
}

/* ---- errors ----------------------------------------------------------------------------- */

static void test_argument_errors(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(1);
    tdm_cache *c = (tdm_cache *)(uintptr_t)1;
    assert_int_equal(tdm_cache_open(NULL, P("c"), NULL, &c), TDM_EINVAL);
    assert_null(c);
    assert_int_equal(tdm_cache_open(rt, NULL, NULL, &c), TDM_EINVAL);
    assert_int_equal(tdm_cache_open(rt, "", NULL, &c), TDM_EINVAL);
    assert_int_equal(tdm_cache_open(rt, P("c"), NULL, NULL), TDM_EINVAL);
    tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
    o.size = 3;
    assert_int_equal(tdm_cache_open(rt, P("c"), &o, &c), TDM_EINVAL);
    o = (tdm_cache_opts)TDM_CACHE_OPTS_INIT;
    o.mmap = TDM_MMAP_READWRITE;
    assert_int_equal(tdm_cache_open(rt, P("c"), &o, &c), TDM_EINVAL);
    o.mmap = TDM_MMAP_READ;
    o.codec = TDM_CODEC_ZSTD;
    assert_int_equal(tdm_cache_open(rt, P("c"), &o, &c), TDM_EINVAL);
    o.mmap = TDM_MMAP_NONE;
    o.level = 99;
    assert_int_equal(tdm_cache_open(rt, P("c"), &o, &c), TDM_EINVAL);
    o = (tdm_cache_opts)TDM_CACHE_OPTS_INIT;
    o.mem = 0x400;
    assert_int_equal(tdm_cache_open(rt, P("c"), &o, &c), TDM_EINVAL);
    /* A file where the directory should be; a path under a file. */
    FILE *f = fopen(P("file"), "w");
    fclose(f);
    assert_int_equal(tdm_cache_open(rt, P("file"), NULL, &c), TDM_EIO);
    assert_int_equal(tdm_cache_open(rt, P("file/sub"), NULL, &c), TDM_EIO);
    assert_int_equal(tdm_cache_opts_init(NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_opts_init(&o), 0);

    c = open_cache(rt, NULL);
    tdm_tensor *x = input(rt, 100, 1.0), *y = NULL, *outs2[2] = {NULL, NULL};
    int hit;
    assert_int_equal(tdm_cache_map(NULL, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_EINVAL);
    assert_int_equal(tdm_cache_map(c, NULL, &x, 1, &y, 1, NULL, 0, NULL, NULL, &hit), TDM_EINVAL);
    assert_int_equal(tdm_cache_map(c, "nope", &x, 1, &y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_ENOTFOUND);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, outs2, 2, NULL, 0, NULL, NULL, &hit),
                     TDM_EINVAL);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, NULL, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_EINVAL);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, -1, &y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_EINVAL);
    assert_int_equal(tdm_cache_map(c, "scale_shift", &x, 1, &y, 1, NULL, 16, NULL, NULL, &hit),
                     TDM_EINVAL);
    tdm_tensor *nullin = NULL;
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &nullin, 1, &y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_EINVAL);
    /* Outputs mixing NULL and given (axpy has one output: use sum's shape rules with two
     * outputs of a user kernel). */
    tdm_kernel_def def = TDM_KERNEL_DEF_INIT;
    def.name = "two_out";
    def.n_in_min = def.n_in_max = 1;
    def.n_out = 2;
    def.cpu = (tdm_kernel_cpu_fn)(uintptr_t)1;
    assert_int_equal(tdm_kernel_register(rt, &def), 0);
    tdm_tensor *mixed[2] = {x, NULL};
    assert_int_equal(tdm_cache_map(c, "two_out", &x, 1, mixed, 2, NULL, 0, NULL, NULL, &hit),
                     TDM_EINVAL);
    assert_non_null(strstr(tdm_errmsg(rt), "all given or all NULL"));
    /* A non-contiguous input. */
    double buf[20];
    int64_t sh[1] = {10}, st[1] = {2};
    tdm_tensor *nc;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_F64, 1, sh, st, buf, &nc), 0);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &nc, 1, &y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_ELAYOUT);
    tdm_tensor_release(nc);
    /* infer's own error (an i32 input to exp_sinh) comes back as the kernel's code. */
    tdm_tensor *xi;
    int64_t ni = 4;
    assert_int_equal(tdm_tensor_zeros(rt, TDM_I32, 1, &ni, 0, &xi), 0);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &xi, 1, &y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_EDTYPE);
    assert_null(y);
    /* The map's own error on a miss (a given output of the wrong length). */
    tdm_tensor *short_y;
    int64_t ns = 50;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, &ns, 0, &short_y), 0);
    assert_int_equal(tdm_cache_map(c, "exp_sinh", &x, 1, &short_y, 1, NULL, 0, NULL, NULL, &hit),
                     TDM_ESHAPE);
    tdm_tensor_release(short_y);
    tdm_tensor_release(xi);
    char key[33];
    assert_int_equal(tdm_cache_key(NULL, "exp_sinh", &x, 1, &y, 1, NULL, 0, key), TDM_EINVAL);
    assert_int_equal(tdm_cache_key(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_clear(NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_usage(NULL, NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_stats_get(NULL, NULL), TDM_EINVAL);
    assert_int_equal(tdm_cache_contains(NULL, key), TDM_EINVAL);
    tdm_cache_close(NULL);
    end_cache_test(rt, c, x, NULL);
}

/* A result that cannot be stored is still returned; the failure is counted. */
static int store_failure_child(tdm_runtime *rt, tdm_cache *c)
{
    int64_t n = 100000;
    tdm_tensor *x, *y = NULL;
    tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &x);
    memset(tdm_tensor_data(x), 0, (size_t)n * 8);
    child_limit_file_size(10000);
    int hit = -1, code = 0;
    /* On the CPU: devices are not what this test is about, and a stored model that says this
     * map is long now opens them (it failed once under TSan in CI after that change, where the
     * stored CPU figures are slow, in this process with its 10,000-byte file size limit; the
     * cause was not pinned down) */
    tdm_map_opts o = TDM_MAP_OPTS_INIT;
    o.progress = TDM_PROGRESS_OFF;
    o.policy = TDM_POLICY_CPU;
    if (tdm_cache_map(c, "exp_sinh", &x, 1, &y, 1, NULL, 0, &o, NULL, &hit) != 0 || hit != 0)
        code = 12;
    tdm_cache_stats st;
    tdm_cache_stats_get(c, &st);
    if (!code && (st.store_failures != 1 || st.stores != 0))
        code = 13;
    if (!code && ((double *)tdm_tensor_data(y))[5] != 0.0)
        code = 14;
    int64_t entries = -1;
    tdm_cache_usage(c, NULL, &entries);
    if (!code && entries != 0)
        code = 15;
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    return code;
}

static void test_store_failure_still_returns_the_result(void **state)
{
    (void)state;
    mk_tmpdir();
    run_cache_children(1, 1, store_failure_child);
    rm_tmpdir();
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define N_KEYS 12

/* Runs every key in an order that depends on `who`, checks every result, `rounds` times. */
static int worker_loop(tdm_runtime *rt, int who, int rounds, uint64_t limit)
{
    tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
    o.bytes_limit = limit;
    tdm_cache *c;
    if (tdm_cache_open(rt, P("cache"), &o, &c) != 0)
        return 2;
    tdm_tensor *xs[N_KEYS];
    for (int i = 0; i < N_KEYS; i++) {
        int64_t n = 20000 + 100 * i;
        tdm_tensor_empty(rt, TDM_F64, 1, &n, 0, &xs[i]);
        double *d = tdm_tensor_data(xs[i]);
        for (int64_t k = 0; k < n; k++)
            d[k] = (double)((k + i) % 1000) * 1e-3;
    }
    int code = 0;
    tdm_map_opts mo = quiet();
    for (int r = 0; r < rounds && !code; r++)
        for (int j = 0; j < N_KEYS && !code; j++) {
            int i = who % 2 ? N_KEYS - 1 - j : (j * 5 + r) % N_KEYS;
            tdm_tensor *y = NULL;
            int hit;
            if (tdm_cache_map(c, "exp_sinh", &xs[i], 1, &y, 1, NULL, 0, &mo, NULL, &hit) != 0) {
                code = 3;
                break;
            }
            const double *a = tdm_tensor_data(xs[i]), *b = tdm_tensor_data(y);
            for (int64_t k = 0; k < tdm_tensor_numel(y); k++)
                if (fabs(b[k] - exp(a[k]) * sinh(a[k])) > 1e-12 * (1 + fabs(b[k])))
                    code = 4;
            if (tdm_tensor_numel(y) != tdm_tensor_numel(xs[i]))
                code = 5;
            tdm_tensor_release(y);
        }
    tdm_cache_stats st;
    tdm_cache_stats_get(c, &st);
    if (!code && st.corrupt != 0)
        code = 6;
    for (int i = 0; i < N_KEYS; i++)
        tdm_tensor_release(xs[i]);
    tdm_cache_close(c);
    return code;
}

static void check_no_leftovers(void)
{
    DIR *d = opendir(P("cache"));
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".tmp-", 5) == 0)
            fail_msg("temporary entry left behind: %s", e->d_name);
    closedir(d);
}

static void test_two_processes_share_one_directory(void **state)
{
    (void)state;
    mk_tmpdir();
    for (int limited = 0; limited < 2; limited++) {
        pid_t pids[2];
        for (int p = 0; p < 2; p++) {
            pids[p] = fork();
            assert_true(pids[p] >= 0);
            if (pids[p] == 0) {
                tdm_runtime *rt = child_open(1);
                if (!rt)
                    _exit(1);
                /* With a limit of about 4 entries, entries are evicted under the other
                 * process's feet all the time. */
                int code = worker_loop(rt, p, 4, limited ? 4 * 170000 : 0);
                tdm_runtime_close(rt);
                _exit(code);
            }
        }
        for (int p = 0; p < 2; p++) {
            int st;
            assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
            assert_true(WIFEXITED(st));
            if (WEXITSTATUS(st) != 0)
                fail_msg("process %d (limited %d) failed with %d", p, limited, WEXITSTATUS(st));
        }
        check_no_leftovers();
    }
    rm_tmpdir();
}

typedef struct {
    tdm_runtime *rt;
    int who;
    int code;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    a->code = worker_loop(a->rt, a->who, 3, a->who == 2 ? 3 * 170000 : 0);
    return NULL;
}

static void test_threads_share_one_cache(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    pthread_t th[3];
    thread_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (thread_arg){rt, i, -1};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].code, 0);
    }
    check_no_leftovers();
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- every dtype -------------------------------------------------------------------------- */

/* Every dtype (bool, i8, i16, u16, u32, u64 included) is stored and served byte for byte, as
 * .npy (mapped) and compressed; the dtype is part of the key (same bytes, another dtype: a
 * miss). */
static void test_every_dtype_is_stored_and_served(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    reg_cpu_kernel(rt, "copy_any", cpu_copy_any, infer_copy_any);
    const struct {
        tdm_mmap_mode m;
        tdm_codec codec;
    } v[] = {{TDM_MMAP_READ, TDM_CODEC_NONE}, {TDM_MMAP_NONE, TDM_CODEC_ZSTD}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        tdm_cache_opts o = TDM_CACHE_OPTS_INIT;
        o.mmap = v[i].m;
        o.codec = v[i].codec;
        tdm_cache *c = open_cache(rt, &o);
        assert_int_equal(tdm_cache_clear(c), 0);
        char keys[TDM_DTYPE_COUNT][33];
        for (int dt = 0; dt < TDM_DTYPE_COUNT; dt++) {
            /* The same 96 bytes seen as each dtype. */
            int64_t rows = 96 / (int64_t)tdm_dtype_size((tdm_dtype)dt) / 2;
            tdm_tensor *x;
            assert_int_equal(tdm_tensor_empty(rt, (tdm_dtype)dt, 2, (int64_t[]){rows, 2}, 0, &x),
                             0);
            unsigned char *p = tdm_tensor_data(x);
            for (int k = 0; k < 96; k++)
                p[k] = (unsigned char)(dt == TDM_BOOL ? k % 3 == 0 : k * 11 + 5);
            tdm_tensor *y = NULL, *y2 = NULL;
            int hit;
            tdm_map_opts mo = quiet();
            assert_int_equal(tdm_cache_key(c, "copy_any", &x, 1, &y, 1, NULL, 0, keys[dt]), 0);
            for (int e = 0; e < dt; e++)
                assert_string_not_equal(keys[e], keys[dt]);
            assert_int_equal(tdm_cache_map(c, "copy_any", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit),
                             0);
            assert_int_equal(hit, 0);
            assert_int_equal(tdm_cache_map(c, "copy_any", &x, 1, &y2, 1, NULL, 0, &mo, NULL, &hit),
                             0);
            assert_int_equal(hit, 1);
            assert_int_equal(tdm_tensor_dtype(y2), dt);
            assert_int_equal(tdm_tensor_dim(y2, 0), rows);
            if (v[i].m != TDM_MMAP_NONE)
                assert_true(tdm_tensor_mem(y2) & TDM_MEM_MAPPED);
            assert_memory_equal(tdm_tensor_data(y2), p, 96);
            tdm_tensor_release(y);
            tdm_tensor_release(y2);
            tdm_tensor_release(x);
        }
        tdm_cache_stats st;
        assert_int_equal(tdm_cache_stats_get(c, &st), 0);
        assert_int_equal(st.stores, TDM_DTYPE_COUNT);
        assert_int_equal(st.corrupt, 0);
        tdm_cache_close(c);
    }
    tdm_test_close(rt);
    rm_tmpdir();
}

/* ---- keys that follow the code --------------------------------------------------------- */

/* One call of "scaled" through a cache in a fresh runtime: hit or miss, and y[1] (x = 0, 1...). */
static int scaled_call(tdm_kernel_cpu_fn cpu, const char *source, uint64_t hash, double *y1,
                       char key[33])
{
    tdm_runtime *rt = runtime_with_scaled(cpu, source, hash);
    tdm_tensor *x, *y;
    assert_int_equal(tdm_tensor_empty(rt, TDM_F64, 1, (int64_t[]){16}, 0, &x), 0);
    assert_int_equal(tdm_tensor_zeros(rt, TDM_F64, 1, (int64_t[]){16}, 0, &y), 0);
    for (int i = 0; i < 16; i++)
        ((double *)tdm_tensor_data(x))[i] = i;
    tdm_cache *c = open_cache(rt, NULL);
    tdm_map_opts mo = quiet();
    mo.policy = TDM_POLICY_THREADS;
    int hit = -1;
    assert_int_equal(tdm_cache_key(c, "scaled", &x, 1, &y, 1, NULL, 0, key), 0);
    assert_int_equal(tdm_cache_map(c, "scaled", &x, 1, &y, 1, NULL, 0, &mo, NULL, &hit), 0);
    *y1 = ((double *)tdm_tensor_data(y))[1];
    tdm_cache_close(c);
    tdm_tensor_release(x);
    tdm_tensor_release(y);
    tdm_test_close(rt);
    return hit;
}

/* A kernel's body changed without a kernel_version bump is a miss, never the old result: its
 * device source text is part of the key, and so is a CPU-only kernel's code_hash. */
static void test_key_follows_the_kernel_code(void **state)
{
    (void)state;
    mk_tmpdir();
    /* (Never built: the maps run on threads. Only the text matters to the key.) */
    const char *src2 = "TDM_KERNEL scaled(TDM_GLOBAL const double *x, TDM_GLOBAL double *y) "
                       "{ y[0] = 2 * x[0]; }\n";
    const char *src3 = "TDM_KERNEL scaled(TDM_GLOBAL const double *x, TDM_GLOBAL double *y) "
                       "{ y[0] = 3 * x[0]; }\n";
    double y1;
    char k1[33], k2[33], k3[33];
    assert_int_equal(scaled_call(cpu_twice, src2, 0, &y1, k1), 0);
    assert_true(y1 == 2.0);
    assert_int_equal(scaled_call(cpu_twice, src2, 0, &y1, k2), 1); /* same code: a hit */
    assert_string_equal(k1, k2);
    assert_true(y1 == 2.0);
    assert_int_equal(scaled_call(cpu_thrice, src3, 0, &y1, k3), 0); /* new text: a miss */
    assert_string_not_equal(k1, k3);
    assert_true(y1 == 3.0);
    /* CPU only: the code hash decides. */
    assert_int_equal(scaled_call(cpu_twice, NULL, 0x1111, &y1, k1), 0);
    assert_true(y1 == 2.0);
    assert_int_equal(scaled_call(cpu_twice, NULL, 0x1111, &y1, k2), 1);
    assert_true(y1 == 2.0);
    assert_string_equal(k1, k2);
    assert_int_equal(scaled_call(cpu_thrice, NULL, 0x2222, &y1, k3), 0);
    assert_true(y1 == 3.0);
    assert_string_not_equal(k1, k3);
    assert_int_equal(scaled_call(cpu_thrice, NULL, 0x2222, &y1, k3), 1);
    assert_true(y1 == 3.0);
    rm_tmpdir();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_then_hit),
        cmocka_unit_test(test_key_covers_inputs_params_outputs_and_version),
        cmocka_unit_test(test_mapped_and_compressed_entries),
        cmocka_unit_test(test_corrupted_or_truncated_entry_is_a_miss),
        cmocka_unit_test(test_damaged_npy_header_is_a_miss),
        cmocka_unit_test(test_verify_off_still_checks_headers_and_shapes),
        cmocka_unit_test(test_entry_of_older_format_is_replaced),
        cmocka_unit_test(test_lru_eviction_respects_bytes_limit),
        cmocka_unit_test(test_directory_is_private_and_keys_are_names),
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_store_failure_still_returns_the_result),
        cmocka_unit_test(test_two_processes_share_one_directory),
        cmocka_unit_test(test_threads_share_one_cache),
        cmocka_unit_test(test_every_dtype_is_stored_and_served),
        cmocka_unit_test(test_key_follows_the_kernel_code),
    };
    return TDM_TEST_MAIN("cache", tests);
}