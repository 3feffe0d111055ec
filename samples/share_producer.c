/* SPDX-License-Identifier: MIT */
/* share_producer — hand a shared tensor to another program and see its writes, without a copy.
 *
 * Creates a 1000 x 1000 f64 tensor in shared memory (TDM_MEM_SHARED), fills it, connects to
 * share_consumer over a Unix-domain socket and tdm_tensor_export()s it: a small header plus the
 * shared memory's file descriptor (SCM_RIGHTS). The consumer maps the same pages, doubles every
 * element and replies one byte; this program then checks, in its own memory and through the
 * same pointer as before, that every element was doubled: the consumer's writes are visible
 * here without any copy in either direction.
 *
 * Build:  cc -O2 share_consumer.c -o share_consumer -ltandem
 *         cc -O2 share_producer.c -o share_producer -ltandem
 * Run:    ./share_consumer /tmp/tandem.sock &
 *         ./share_producer /tmp/tandem.sock [rows]     # rows x 1000 f64 (default 1000: 8 MB)
 * The producer retries the connection for up to 10 s, so the order of the two starts does not
 * matter much; it waits up to 30 s for the reply. Exit 0 when every element checks out.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <tandem.h>

/* Connects to the consumer, retrying while it is not listening yet (up to 10 s). */
static int connect_retry(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long (max %zu bytes)\n", sizeof addr.sun_path - 1);
        return -1;
    }
    strcpy(addr.sun_path, path);
    for (int attempt = 0; attempt < 200; attempt++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -1;
        if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0)
            return s;
        int e = errno;
        close(s);
        if (e != ENOENT && e != ECONNREFUSED) {
            fprintf(stderr, "producer: connect %s: %s\n", path, strerror(e));
            return -1;
        }
        nanosleep(&(struct timespec){0, 50000000}, NULL); /* 50 ms */
    }
    fprintf(stderr, "producer: nobody listens on %s (10 s)\n", path);
    return -1;
}

static double value(int64_t i)
{
    return (double)(i % 1000) * 0.5 + 1.0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SOCKET_PATH [rows]\n", argv[0]);
        return 2;
    }
    int64_t shape[2] = {argc > 2 ? atoll(argv[2]) : 1000, 1000};
    if (shape[0] <= 0) {
        fprintf(stderr, "rows must be > 0\n");
        return 2;
    }

    tdm_runtime *rt = NULL;
    tdm_tensor *t = NULL;
    int sock = -1, status = 1;
    int rc = tdm_runtime_open(&rt, NULL);
    if (rc != 0) {
        fprintf(stderr, "tdm_runtime_open: %s: %s\n", tdm_status_name(rc), tdm_errmsg(NULL));
        return 1;
    }

    /* 1. A tensor in shared memory (tdm_tensor_share() would move an existing one there). */
    rc = tdm_tensor_empty(rt, TDM_F64, 2, shape, TDM_MEM_SHARED, &t);
    if (rc != 0) {
        fprintf(stderr, "tdm_tensor_empty: %s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
        goto out;
    }
    double *x = tdm_tensor_data(t);
    int64_t n = tdm_tensor_numel(t);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i] = value(i);
    printf("producer: shared f64 tensor [%lld, %lld] (%.1f MB), checksum %.6f\n",
           (long long)shape[0], (long long)shape[1], (double)tdm_tensor_nbytes(t) / 1e6, sum);

    /* 2. Connect and export: a header and a file descriptor travel, not the data. */
    sock = connect_retry(argv[1]);
    if (sock < 0)
        goto out;
    rc = tdm_tensor_export(t, sock);
    if (rc != 0) {
        fprintf(stderr, "tdm_tensor_export: %s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
        goto out;
    }
    printf("producer: exported; waiting for the consumer\n");
    fflush(stdout);

    /* 3. Wait for the consumer's byte (bounded). */
    struct pollfd pfd = {sock, POLLIN, 0};
    char reply = 0;
    if (poll(&pfd, 1, 30000) <= 0 || read(sock, &reply, 1) != 1 || reply != 'k') {
        fprintf(stderr, "producer: no reply from the consumer\n");
        goto out;
    }

    /* 4. The consumer wrote into these very pages: read them through the same pointer. */
    int64_t bad = 0;
    double sum2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum2 += x[i];
        if (x[i] != 2.0 * value(i))
            bad++;
    }
    if (bad) {
        printf("producer: FAILED: %lld of %lld elements are not doubled\n", (long long)bad,
               (long long)n);
        goto out;
    }
    printf("producer: all %lld elements doubled by the consumer, seen in place without a copy "
           "(checksum %.6f = 2 x %.6f)\n",
           (long long)n, sum2, sum);
    status = 0;

out:
    if (sock >= 0)
        close(sock);
    tdm_tensor_release(t);
    if (tdm_runtime_close(rt) != 0)
        status = 1;
    return status;
}
