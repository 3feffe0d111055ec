/* SPDX-License-Identifier: MIT */
/* Progress display: the bar fits its width (tdm_progress_format, and on a real terminal: a pty
 * of a given size, resized while a map runs), degrades to a plain line when narrow, never
 * wraps; and a library prints nothing by default (TDM_PROGRESS_AUTO) unless TDM_PROGRESS asks. */
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tdm_test.h"

/* Display columns of a UTF-8 string (one per code point). */
static int cols(const char *s, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static void test_format_fills_width(void **state)
{
    tdm_progress p = {450, 1000, 2.0, 225.0, 2.44, 0, NULL, 0};
    char buf[2048];
    for (int w = 20; w <= 400; w += 7) {
        int n =
            tdm_progress_format(&p, "a rather long description of the work", w, buf, sizeof buf);
        assert_true(n > 0);
        assert_int_equal((size_t)n, strlen(buf));
        assert_true(cols(buf, strlen(buf)) <= w);
        if (w >= 80) /* room for a bar: the line is exactly the width */
            assert_int_equal(cols(buf, strlen(buf)), w);
    }
    /* 0 = 80 columns */
    tdm_progress_format(&p, "pi", 0, buf, sizeof buf);
    assert_int_equal(cols(buf, strlen(buf)), 80);
}

static void test_format_narrow_is_plain(void **state)
{
    tdm_progress p = {450, 1000, 2.0, 225.0, 2.44, 0, NULL, 0};
    char buf[512];
    tdm_progress_format(&p, "pi", 40, buf, sizeof buf);
    assert_null(strstr(buf, "|"));
    assert_non_null(strstr(buf, "pi:  45% 450/1000"));
    assert_true(cols(buf, strlen(buf)) <= 40);
    tdm_progress_format(&p, NULL, 20, buf, sizeof buf);
    assert_int_equal(cols(buf, strlen(buf)), 20);
    assert_non_null(strstr(buf, " 45% 450/1000"));
    /* wide enough again: a bar */
    tdm_progress_format(&p, "pi", 70, buf, sizeof buf);
    assert_non_null(strstr(buf, "pi:  45%|"));
    assert_true(cols(buf, strlen(buf)) == 70);
    assert_int_equal(tdm_progress_format(&p, NULL, 19, buf, sizeof buf), TDM_EINVAL);
    assert_int_equal(tdm_progress_format(&p, NULL, -1, buf, sizeof buf), TDM_EINVAL);
}

/* ---- on a pseudo-terminal ------------------------------------------------------------------ */

typedef struct {
    int resize_at; /* item at which the body narrows the terminal (-1: never) */
    int resize_to; /* its new width */
} slow_params;

static int slow(const void *params, int64_t b, int64_t e, tdm_task *task)
{
    const slow_params *sp = params;
    for (int64_t i = b; i < e; i++) {
        if (i == sp->resize_at) {
            struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)sp->resize_to};
            ioctl(STDERR_FILENO, TIOCSWINSZ, &ws);
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Reads everything the child writes to `fd` until it closes its side (EOF, or EIO on a pty),
 * closes fd, and checks that the child exited 0. Returns the bytes read (out is terminated). */
static size_t drain_and_reap(int fd, pid_t pid, char *out, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, out + len, cap - 1 - len);
        if (k > 0) {
            len += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        break;
    }
    out[len] = '\0';
    close(fd);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    return len;
}

/* Runs a 100-item map in a child whose stderr is a pty of `width` columns, with `mode` and
 * TDM_PROGRESS set to `env` (NULL: unset); returns what the terminal received. */
static size_t run_on_pty(int width, int mode, const char *env, int resize_at, int resize_to,
                         char *out, size_t cap)
{
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)width};
    int master = -1;
    fflush(NULL);
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    assert_true(pid >= 0);
    if (pid == 0) {
        if (env)
            setenv("TDM_PROGRESS", env, 1);
        else
            unsetenv("TDM_PROGRESS");
        tdm_config cfg = TDM_CONFIG_INIT;
        cfg.threads = 1;
        cfg.use_env = 0;
        cfg.sched_model_dir = "off";
        tdm_runtime *rt = NULL;
        if (tdm_runtime_open(&rt, &cfg) != 0)
            _exit(10);
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.policy = TDM_POLICY_THREADS;
        o.batch_size = 1;
        o.progress = (tdm_progress_mode)mode;
        o.progress_interval_s = 0.005;
        o.desc = "pty-test";
        slow_params sp = {resize_at, resize_to};
        int rc = tdm_parallel_for(rt, 100, slow, &sp, sizeof sp, &o, NULL);
        _exit(rc == 0 && tdm_runtime_close(rt) == 0 ? 0 : 11);
    }
    return drain_and_reap(master, pid, out, cap);
}

/* Splits the terminal's input into the lines it drew (between \r / \n, escape sequences
 * removed) and returns the widest; *frames counts them, *last is the width of the last. */
static int widest_line(const char *out, size_t len, int *frames, int *last)
{
    int widest = 0, cur = 0;
    *frames = 0;
    *last = 0;
    for (size_t i = 0; i < len; i++) {
        char c = out[i];
        if (c == '\033') { /* CSI: ESC [ params letter */
            i++;
            while (i + 1 < len && !((out[i + 1] >= 'A' && out[i + 1] <= 'Z') ||
                                    (out[i + 1] >= 'a' && out[i + 1] <= 'z')))
                i++;
            i++;
            continue;
        }
        if (c == '\r' || c == '\n') {
            if (cur > 0) {
                (*frames)++;
                *last = cur;
            }
            widest = cur > widest ? cur : widest;
            cur = 0;
            continue;
        }
        cur += ((unsigned char)c & 0xC0) != 0x80;
    }
    if (cur > 0) {
        (*frames)++;
        *last = cur;
    }
    return widest > cur ? widest : cur;
}

static char g_out[1 << 20];

/* A bar on a 50-column terminal: every frame is at most 49 columns (never wraps). */
static void test_bar_fits_terminal(void **state)
{
    size_t len = run_on_pty(50, TDM_PROGRESS_BAR, NULL, -1, 0, g_out, sizeof g_out);
    int frames, last;
    int w = widest_line(g_out, len, &frames, &last);
    assert_true(frames >= 2);
    assert_true(w <= 49);
    assert_non_null(strstr(g_out, "100/100"));
}

/* The terminal narrows to 16 columns while the map runs: the width is asked at every frame, so
 * the last frame (drawn after the resize) fits 15 columns, as a plain line. */
static void test_bar_follows_resize(void **state)
{
    size_t len = run_on_pty(100, TDM_PROGRESS_BAR, NULL, 10, 16, g_out, sizeof g_out);
    int frames, last;
    int w = widest_line(g_out, len, &frames, &last);
    assert_true(w <= 99);
    assert_true(last <= 15);
    assert_non_null(strstr(g_out, "100% 100/100"));
}

/* A terminal too narrow for any bar (12 columns): plain lines of at most 11 columns. */
static void test_narrow_terminal_plain_line(void **state)
{
    size_t len = run_on_pty(12, TDM_PROGRESS_PER_WORKER, NULL, -1, 0, g_out, sizeof g_out);
    int frames, last;
    int w = widest_line(g_out, len, &frames, &last);
    assert_true(frames >= 1);
    assert_true(w <= 11);
    assert_null(strstr(g_out, "\u2588"));
}

/* The library's default prints nothing, even on a terminal; TDM_PROGRESS=1 turns the bar on,
 * TDM_PROGRESS=0 keeps it off. */
static void test_auto_silent_unless_asked(void **state)
{
    size_t len = run_on_pty(80, TDM_PROGRESS_AUTO, NULL, -1, 0, g_out, sizeof g_out);
    assert_int_equal(len, 0);
    len = run_on_pty(80, TDM_PROGRESS_AUTO, "0", -1, 0, g_out, sizeof g_out);
    assert_int_equal(len, 0);
    len = run_on_pty(80, TDM_PROGRESS_AUTO, "1", -1, 0, g_out, sizeof g_out);
    assert_true(len > 0);
    assert_non_null(strstr(g_out, "pty-test: 100%|"));
}

/* Runs a 40-item parallel_for with one bar per worker in a child (2 threads, 2 worker
 * processes, stderr a pipe) under `policy`; returns what it drew. */
static size_t run_per_worker(tdm_policy policy, char *out, size_t cap)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        tdm_config cfg = TDM_CONFIG_INIT;
        cfg.threads = 2;
        cfg.procs = 2;
        cfg.use_env = 0;
        cfg.sched_model_dir = "off";
        tdm_runtime *rt = NULL;
        if (tdm_runtime_open(&rt, &cfg) != 0)
            _exit(10);
        tdm_map_opts o = TDM_MAP_OPTS_INIT;
        o.policy = policy;
        o.batch_size = 1;
        o.progress = TDM_PROGRESS_PER_WORKER;
        o.progress_interval_s = 0.005;
        o.desc = "lanes";
        slow_params sp = {-1, 0};
        int rc = tdm_parallel_for(rt, 40, slow, &sp, sizeof sp, &o, NULL);
        _exit(rc == 0 && tdm_runtime_close(rt) == 0 ? 0 : 11);
    }
    close(fds[1]);
    return drain_and_reap(fds[0], pid, out, cap);
}

/* One bar per worker only for the workers the policy may use: a PROCS call draws the two
 * worker processes (workers 2 and 3), not the idle threads; a THREADS call the threads. */
static void test_per_worker_bars_only_for_usable_workers(void **state)
{
    run_per_worker(TDM_POLICY_PROCS, g_out, sizeof g_out);
    assert_non_null(strstr(g_out, "worker 2"));
    assert_non_null(strstr(g_out, "worker 3"));
    assert_null(strstr(g_out, "worker 0"));
    assert_null(strstr(g_out, "worker 1"));
    run_per_worker(TDM_POLICY_THREADS, g_out, sizeof g_out);
    assert_non_null(strstr(g_out, "worker 0"));
    assert_non_null(strstr(g_out, "worker 1"));
    assert_null(strstr(g_out, "worker 2"));
    assert_null(strstr(g_out, "worker 3"));
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_fills_width),
        cmocka_unit_test(test_format_narrow_is_plain),
        cmocka_unit_test(test_bar_fits_terminal),
        cmocka_unit_test(test_bar_follows_resize),
        cmocka_unit_test(test_narrow_terminal_plain_line),
        cmocka_unit_test(test_auto_silent_unless_asked),
        cmocka_unit_test(test_per_worker_bars_only_for_usable_workers),
    };
    return TDM_TEST_MAIN("progress", tests);
}
