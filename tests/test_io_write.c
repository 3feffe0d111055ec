/* SPDX-License-Identifier: MIT */
/* Large .npy saves on several threads (runtime/io/io_write.c). CTest names io_write_<behaviour>.
 *
 * The executable is linked with --wrap for fallocate, mmap, pthread_create, pwrite and fstatfs:
 * the wrappers count the calls made while a save runs (so a test sees that the threaded path
 * was really taken) and can make the Nth of them fail with a chosen errno; fstatfs can report
 * another file system type. A file size limit (RLIMIT_FSIZE, in a forked child) gives a real
 * failing write.
 *
 * The threaded path is taken only on ext4, XFS and tmpfs. Where the test directory is on
 * another file system, the tests that expect it say so and have fstatfs report ext4. */
#include <sys/socket.h>
#include <sys/vfs.h>
#include "io_test_util.h"

/* ---- syscall wrappers ---------------------------------------------------------------------- */

enum { W_FALLOCATE, W_MMAP, W_THREAD, W_PWRITE, W_N };

#define FS_EXT4 0xEF53
#define FS_XFS 0x58465342
#define FS_TMPFS 0x01021994
#define FS_BTRFS 0x9123683E
#define FS_OVERLAY 0x794c7630
#define FS_NFS 0x6969

typedef struct {
    atomic_bool counting;       /* only calls made during a save count */
    atomic_long seen[W_N];      /* calls while counting */
    atomic_long fail_at[W_N];   /* the index of the call that fails; -1: none */
    atomic_long fail_from[W_N]; /* every call from this index on fails; -1: none */
    atomic_int err[W_N];        /* its errno */
    atomic_long fired[W_N];
    atomic_long shared_maps; /* MAP_SHARED writable file mappings while counting */
    atomic_long fs_type;     /* what fstatfs reports as f_type; 0: the truth */
} wr_inject;

static wr_inject g;

int __real_fallocate(int fd, int mode, off_t o, off_t l);
void *__real_mmap(void *a, size_t l, int p, int f, int fd, off_t o);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
ssize_t __real_pwrite(int fd, const void *b, size_t n, off_t o);
int __real_fstatfs(int fd, struct statfs *st);

static bool fails(int w)
{
    if (!atomic_load(&g.counting))
        return false;
    long i = atomic_fetch_add(&g.seen[w], 1);
    long at = atomic_load(&g.fail_at[w]), from = atomic_load(&g.fail_from[w]);
    if (i != at && (from < 0 || i < from))
        return false;
    atomic_fetch_add(&g.fired[w], 1);
    return true;
}

int __wrap_fallocate(int fd, int mode, off_t o, off_t l)
{
    if (fails(W_FALLOCATE)) {
        errno = atomic_load(&g.err[W_FALLOCATE]);
        return -1;
    }
    return __real_fallocate(fd, mode, o, l);
}
void *__wrap_mmap(void *a, size_t l, int p, int f, int fd, off_t o)
{
    if (fails(W_MMAP)) {
        errno = atomic_load(&g.err[W_MMAP]);
        return MAP_FAILED;
    }
    void *r = __real_mmap(a, l, p, f, fd, o);
    if (r != MAP_FAILED && atomic_load(&g.counting) && fd >= 0 && (f & MAP_SHARED) &&
        (p & PROT_WRITE))
        atomic_fetch_add(&g.shared_maps, 1);
    return r;
}
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    if (fails(W_THREAD))
        return atomic_load(&g.err[W_THREAD]);
    return __real_pthread_create(t, a, fn, arg);
}
ssize_t __wrap_pwrite(int fd, const void *b, size_t n, off_t o)
{
    if (fails(W_PWRITE)) {
        errno = atomic_load(&g.err[W_PWRITE]);
        return -1;
    }
    return __real_pwrite(fd, b, n, o);
}

int __wrap_fstatfs(int fd, struct statfs *st)
{
    int r = __real_fstatfs(fd, st);
    long type = atomic_load(&g.fs_type);
    if (r == 0 && type != 0)
        st->f_type = type;
    return r;
}

static void reset(void)
{
    atomic_store(&g.counting, false);
    for (int w = 0; w < W_N; w++) {
        atomic_store(&g.seen[w], 0);
        atomic_store(&g.fail_at[w], -1);
        atomic_store(&g.fail_from[w], -1);
        atomic_store(&g.fired[w], 0);
    }
    atomic_store(&g.shared_maps, 0);
}

/* After mk_tmpdir(): where the test directory's file system does not take the threaded path,
 * fstatfs reports ext4 from now on (said on stderr), so the path is still tested. */
static void threaded_fs(void)
{
    struct statfs st;
    assert_int_equal(statfs(g_dir, &st), 0);
    unsigned long t = (unsigned long)st.f_type;
    if (t == FS_EXT4 || t == FS_XFS || t == FS_TMPFS) {
        atomic_store(&g.fs_type, 0);
        return;
    }
    print_message("%s: file system 0x%lx does not take the threaded path: fstatfs says ext4\n",
                  g_dir, t);
    atomic_store(&g.fs_type, FS_EXT4);
}

/* tdm_save with the wrappers counting. */
static int counted_save(const tdm_tensor *t, const char *path)
{
    atomic_store(&g.counting, true);
    int rc = tdm_save(t, path, NULL);
    atomic_store(&g.counting, false);
    return rc;
}

/* ---- checks ---------------------------------------------------------------------------------- */

#define MIB (1ll << 20)

/* The file at path holds t's header-less bytes after a header: compares them with t's data. */
static void assert_file_holds(const char *path, const tdm_tensor *t)
{
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    size_t bytes = (size_t)tdm_tensor_numel(t) * tdm_dtype_size(tdm_tensor_dtype(t));
    assert_true(n > bytes);
    size_t hlen = n - bytes;
    assert_int_equal(hlen % 64, 0);
    assert_memory_equal(b, "\x93NUMPY", 6);
    assert_true(memcmp(b + hlen, tdm_tensor_data(t), bytes) == 0);
    free(b);
}

/* The names in the test directory other than `keep`: a save must leave no temporary behind. */
static int stray_files(const char *keep)
{
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && (!keep || strcmp(e->d_name, keep) != 0))
            n++;
    closedir(d);
    return n;
}

static int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* A 1-D u8 tensor of n bytes (any n: odd sizes end mid-page and mid-step). */
static tdm_tensor *bytes_tensor(tdm_runtime *rt, int64_t n, unsigned seed)
{
    return make(rt, TDM_U8, 1, (int64_t[]){n}, seed);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* Other file systems (btrfs reserves space again at each write fault, so a copy into the
 * mapping could end in SIGBUS; overlayfs, NFS: not known), tensors mapped from a file and
 * imported tensors (a truncation by another process would fault the copy, where pwrite
 * reports EFAULT): written on the calling thread, right. */
static void test_other_file_systems_and_mapped_sources_use_one_thread(void **state)
{
    (void)state;
    mk_tmpdir();
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *t = bytes_tensor(rt, 40 * MIB + 9, 4);
    const long others[3] = {FS_BTRFS, FS_OVERLAY, FS_NFS};
    for (int k = 0; k < 3; k++) {
        reset();
        atomic_store(&g.fs_type, others[k]);
        assert_int_equal(counted_save(t, P("a.npy")), 0);
        assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
        assert_int_equal(atomic_load(&g.shared_maps), 0);
        assert_file_holds(P("a.npy"), t);
    }
    threaded_fs();
    reset();
    assert_int_equal(counted_save(t, P("a.npy")), 0);
    assert_int_equal(atomic_load(&g.seen[W_THREAD]), 1); /* the control: threads here */
    tdm_load_opts lo = TDM_LOAD_OPTS_INIT;
    lo.mmap = TDM_MMAP_READ;
    tdm_tensor *m;
    assert_int_equal(tdm_load(rt, P("a.npy"), &lo, &m), 0);
    assert_true(tdm_tensor_mem(m) & TDM_MEM_MAPPED);
    const char *to[2] = {P("b.npy"), P("a.npy")}; /* another path, and its own */
    for (int k = 0; k < 2; k++) {
        reset();
        assert_int_equal(counted_save(m, to[k]), 0);
        assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
        assert_file_holds(to[k], t);
    }
    tdm_tensor_release(m);
    /* an import: another process's memory, which it may shrink */
    tdm_tensor *sh, *imp;
    assert_int_equal(
        tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){40 * MIB + 9}, TDM_MEM_SHARED, &sh), 0);
    memcpy(tdm_tensor_data(sh), tdm_tensor_data(t), 40 * MIB + 9);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(tdm_tensor_export(sh, sv[0]), 0);
    assert_int_equal(tdm_tensor_import(rt, sv[1], &imp), 0);
    reset();
    assert_int_equal(counted_save(imp, P("c.npy")), 0);
    assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
    assert_file_holds(P("c.npy"), t);
    reset();
    assert_int_equal(counted_save(sh, P("d.npy")), 0); /* the exporter's own: threads */
    assert_int_equal(atomic_load(&g.seen[W_THREAD]), 1);
    assert_file_holds(P("d.npy"), t);
    close(sv[0]);
    close(sv[1]);
    tdm_tensor_release(imp);
    tdm_tensor_release(sh);
    tdm_tensor_release(t);
    tdm_test_close(rt);
    atomic_store(&g.fs_type, 0);
    rm_tmpdir();
}

/* Sizes around the 32 MiB threshold and the 8 MiB steps, on 1, 2, 3 and 9 threads: the bytes
 * are right, and the threaded path (a shared mapping, helpers) runs exactly when it should. */
static void test_large_saves_are_written_on_threads(void **state)
{
    (void)state;
    mk_tmpdir();
    threaded_fs();
    const int threads[] = {1, 2, 3, 9};
    const int64_t sizes[] = {32 * MIB - 1, 32 * MIB, 32 * MIB + 4097, 72 * MIB + 123};
    for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
        tdm_runtime *rt = tdm_test_open(threads[k]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            if (threads[k] != 3 && s == 3)
                continue; /* the 10-step size: on 3 threads only, to keep the test short */
            tdm_tensor *t = bytes_tensor(rt, sizes[s], (unsigned)(k * 10 + s));
            reset();
            assert_int_equal(counted_save(t, P("a.npy")), 0);
            assert_file_holds(P("a.npy"), t);
            int64_t steps = (sizes[s] + 8 * MIB - 1) / (8 * MIB);
            bool par = threads[k] > 1 && sizes[s] >= 32 * MIB;
            long helpers = par ? (threads[k] < steps ? threads[k] : steps) - 1 : 0;
            assert_int_equal(atomic_load(&g.seen[W_THREAD]), helpers);
            assert_int_equal(atomic_load(&g.shared_maps), par ? 1 : 0);
            assert_int_equal(stray_files("a.npy"), 0);
            tdm_tensor *back;
            assert_int_equal(tdm_load(rt, P("a.npy"), NULL, &back), 0);
            assert_same(t, back);
            tdm_tensor_release(back);
            tdm_tensor_release(t);
        }
        tdm_test_close(rt);
    }
    rm_tmpdir();
}

/* Column-major tensors take the threaded path too (their bytes as they are, fortran_order
 * True); a strided view is gathered on the calling thread. Both load back element for element. */
static void test_large_fortran_and_strided_saves_round_trip(void **state)
{
    (void)state;
    mk_tmpdir();
    threaded_fs();
    tdm_runtime *rt = tdm_test_open(2);
    int64_t shape[2] = {4099, 8193}; /* 33.6 MB of u8 */
    size_t n = (size_t)(shape[0] * shape[1]);
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    int64_t fst[2] = {1, shape[0]};
    tdm_tensor *f;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_U8, 2, shape, fst, buf, &f), 0);
    reset();
    assert_int_equal(counted_save(f, P("f.npy")), 0);
    assert_int_equal(atomic_load(&g.seen[W_THREAD]), 1);
    assert_file_holds(P("f.npy"), f);
    tdm_tensor *back;
    assert_int_equal(tdm_load(rt, P("f.npy"), NULL, &back), 0);
    assert_same_elements(f, back);
    tdm_tensor_release(back);
    /* every other row of a C-order tensor: not contiguous */
    int64_t cshape[2] = {8192, 8192};
    tdm_tensor *c = make(rt, TDM_U8, 2, cshape, 5);
    int64_t vst[2] = {2 * cshape[1], 1}, vshape[2] = {4096, 8192};
    tdm_tensor *v;
    assert_int_equal(tdm_tensor_wrap(rt, TDM_U8, 2, vshape, vst, tdm_tensor_data(c), &v), 0);
    reset();
    assert_int_equal(counted_save(v, P("v.npy")), 0);
    assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
    assert_int_equal(atomic_load(&g.shared_maps), 0);
    assert_int_equal(tdm_load(rt, P("v.npy"), NULL, &back), 0);
    assert_same_elements(v, back);
    tdm_tensor_release(back);
    tdm_tensor_release(v);
    tdm_tensor_release(c);
    tdm_tensor_release(f);
    free(buf);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* A file system that cannot reserve blocks (EOPNOTSUPP from every fallocate): the save is
 * written on the calling thread, right. */
static void test_save_without_reservation_writes_on_one_thread(void **state)
{
    (void)state;
    mk_tmpdir();
    threaded_fs(); /* else one thread whatever the fallocate */
    tdm_runtime *rt = tdm_test_open(2);
    tdm_tensor *t = bytes_tensor(rt, 40 * MIB + 5, 1);
    reset();
    atomic_store(&g.fail_from[W_FALLOCATE], 0);
    atomic_store(&g.err[W_FALLOCATE], EOPNOTSUPP);
    assert_int_equal(counted_save(t, P("a.npy")), 0);
    assert_true(atomic_load(&g.fired[W_FALLOCATE]) >= 1);
    assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
    assert_int_equal(atomic_load(&g.shared_maps), 0);
    assert_file_holds(P("a.npy"), t);
    assert_int_equal(stray_files("a.npy"), 0);
    tdm_tensor_release(t);
    tdm_test_close(rt);
    rm_tmpdir();
}

/* A full disk (ENOSPC, EDQUOT from the reservation), on one thread and on two: TDM_EIO naming
 * the path, the previous file intact, no temporary left, nothing written. */
static void test_save_reports_a_full_disk(void **state)
{
    (void)state;
    mk_tmpdir();
    threaded_fs();
    const int errs[2] = {ENOSPC, EDQUOT};
    for (int threads = 1; threads <= 2; threads++)
        for (int e = 0; e < 2; e++) {
            tdm_runtime *rt = tdm_test_open(threads);
            tdm_tensor *old = bytes_tensor(rt, 1000, 7), *t = bytes_tensor(rt, 40 * MIB, 8);
            assert_int_equal(tdm_save(old, P("keep.npy"), NULL), 0);
            reset();
            atomic_store(&g.fail_at[W_FALLOCATE], 0);
            atomic_store(&g.err[W_FALLOCATE], errs[e]);
            assert_int_equal(counted_save(t, P("keep.npy")), TDM_EIO);
            assert_int_equal(atomic_load(&g.fired[W_FALLOCATE]), 1);
            assert_non_null(strstr(tdm_errmsg(rt), "no room"));
            assert_non_null(strstr(tdm_errmsg(rt), "keep.npy"));
            assert_int_equal(atomic_load(&g.seen[W_PWRITE]), 1); /* the header only */
            assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
            assert_file_holds(P("keep.npy"), old);
            assert_int_equal(stray_files("keep.npy"), 0);
            tdm_tensor_release(old);
            tdm_tensor_release(t);
            tdm_test_close(rt);
        }
    rm_tmpdir();
}

/* The mapping fails, or helper threads do not start (the first, or the second of two): the
 * save still completes, on fewer threads, with the right bytes and no thread left behind. */
static void test_save_survives_failed_mappings_and_thread_starts(void **state)
{
    (void)state;
    mk_tmpdir();
    threaded_fs();
    struct {
        int w, threads;
        long at;
        int err;
        long helpers; /* helper threads that start */
    } cases[] = {{W_MMAP, 2, 0, ENOMEM, 0},
                 {W_THREAD, 2, 0, EAGAIN, 0},
                 {W_THREAD, 3, 0, EAGAIN, 0},
                 {W_THREAD, 3, 1, EAGAIN, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tdm_runtime *rt = tdm_test_open(cases[k].threads);
        tdm_tensor *t = bytes_tensor(rt, 48 * MIB + 17, (unsigned)k);
        int tasks = task_count();
        reset();
        atomic_store(&g.fail_at[cases[k].w], cases[k].at);
        atomic_store(&g.err[cases[k].w], cases[k].err);
        assert_int_equal(counted_save(t, P("a.npy")), 0);
        assert_int_equal(atomic_load(&g.fired[cases[k].w]), 1);
        if (cases[k].w == W_THREAD)
            assert_int_equal(atomic_load(&g.seen[W_THREAD]) - 1, cases[k].helpers);
        else
            assert_int_equal(atomic_load(&g.seen[W_THREAD]), 0);
        assert_file_holds(P("a.npy"), t);
        assert_int_equal(stray_files("a.npy"), 0);
        assert_int_equal(task_count(), tasks);
        tdm_tensor_release(t);
        tdm_test_close(rt);
    }
    rm_tmpdir();
}

/* Every pwrite of a threaded save failing in turn (N = 0, 1, ...: the header, then each of the
 * calling thread's steps): TDM_EIO naming the path and the offset, the helpers stopped and
 * joined, the previous file intact, no temporary left. */
static void test_save_reports_each_failing_write(void **state)
{
    (void)state;
    mk_tmpdir();
    threaded_fs();
    for (int threads = 2; threads <= 3; threads++) {
        tdm_runtime *rt = tdm_test_open(threads);
        tdm_tensor *old = bytes_tensor(rt, 100, 1), *t = bytes_tensor(rt, 56 * MIB + 3, 2);
        assert_int_equal(tdm_save(old, P("keep.npy"), NULL), 0);
        int tasks = task_count();
        long nth = 0;
        for (;; nth++) {
            reset();
            atomic_store(&g.fail_at[W_PWRITE], nth);
            atomic_store(&g.err[W_PWRITE], EIO);
            int rc = counted_save(t, P("keep.npy"));
            if (atomic_load(&g.fired[W_PWRITE]) == 0) {
                assert_int_equal(rc, 0); /* every write made: this save succeeds */
                assert_file_holds(P("keep.npy"), t);
                break;
            }
            assert_int_equal(rc, TDM_EIO);
            assert_non_null(strstr(tdm_errmsg(rt), "write to"));
            assert_non_null(strstr(tdm_errmsg(rt), "keep.npy"));
            assert_file_holds(P("keep.npy"), old);
            assert_int_equal(stray_files("keep.npy"), 0);
            assert_int_equal(task_count(), tasks);
        }
        assert_true(nth >= 2); /* the header and at least one step were made to fail */
        tdm_tensor_release(old);
        tdm_tensor_release(t);
        tdm_test_close(rt);
    }
    rm_tmpdir();
}

/* In a child limited to 16 MiB per file (a real failing syscall: fallocate and pwrite get
 * EFBIG): a 40 MiB save on two threads fails with TDM_EIO and leaves the previous file and no
 * temporary; a 1 MiB save still works. */
static int file_limit_child(void *arg)
{
    (void)arg;
    tdm_runtime *rt = child_open(2);
    if (!rt)
        return 10;
    tdm_tensor *old, *big, *small;
    if (tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){1000}, 0, &old) != 0 ||
        tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){40 * MIB}, 0, &big) != 0 ||
        tdm_tensor_empty(rt, TDM_U8, 1, (int64_t[]){MIB}, 0, &small) != 0)
        return 11;
    fill(old, 1);
    fill(big, 2);
    fill(small, 3);
    if (tdm_save(old, P("keep.npy"), NULL) != 0)
        return 12;
    child_limit_file_size(16 * MIB);
    if (tdm_save(big, P("keep.npy"), NULL) != TDM_EIO)
        return 13;
    size_t n;
    unsigned char *b = read_bytes(P("keep.npy"), &n);
    int code = n == 1128 && memcmp(b + 128, tdm_tensor_data(old), 1000) == 0 ? 0 : 14;
    free(b);
    if (!code && tdm_save(small, P("small.npy"), NULL) != 0)
        code = 15;
    tdm_tensor *back;
    if (!code && tdm_load(rt, P("small.npy"), NULL, &back) != 0)
        code = 16;
    if (!code && memcmp(tdm_tensor_data(back), tdm_tensor_data(small), MIB) != 0)
        code = 17;
    if (!code)
        tdm_tensor_release(back);
    tdm_tensor_release(old);
    tdm_tensor_release(big);
    tdm_tensor_release(small);
    if (tdm_runtime_close(rt) != 0 && !code)
        code = 18;
    return code;
}

static void test_save_past_the_file_size_limit_fails_cleanly(void **state)
{
    (void)state;
    mk_tmpdir();
    run_in_children(1, file_limit_child, NULL);
    assert_int_equal(stray_files("keep.npy") - exists(P("small.npy")), 0);
    rm_tmpdir();
}

int main(int argc, char **argv)
{
    reset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_saves_are_written_on_threads),
        cmocka_unit_test(test_large_fortran_and_strided_saves_round_trip),
        cmocka_unit_test(test_other_file_systems_and_mapped_sources_use_one_thread),
        cmocka_unit_test(test_save_without_reservation_writes_on_one_thread),
        cmocka_unit_test(test_save_reports_a_full_disk),
        cmocka_unit_test(test_save_survives_failed_mappings_and_thread_starts),
        cmocka_unit_test(test_save_reports_each_failing_write),
        cmocka_unit_test(test_save_past_the_file_size_limit_fails_cleanly),
    };
    return TDM_TEST_MAIN("io_write", tests);
}
