/* SPDX-License-Identifier: MIT */
/* share_consumer — receive a tensor from another program and write into it, without a copy.
 *
 * The other half of share_producer.c. This program listens on a Unix-domain socket, accepts one
 * connection, and tdm_tensor_import()s the tensor the producer tdm_tensor_export()ed: the
 * producer's shared-memory file descriptor arrives with the message (SCM_RIGHTS) and is mapped
 * here, so both programs read and write the same pages (torch's "file_descriptor" sharing
 * strategy). It prints the shape and a checksum, doubles every element, and replies one byte
 * so the producer knows it may look.
 *
 * Build:  cc -O2 share_consumer.c -o share_consumer -ltandem
 *         cc -O2 share_producer.c -o share_producer -ltandem
 * Run (two terminals, or one with &):
 *         ./share_consumer /tmp/tandem.sock &      # listens; waits up to 30 s for the producer
 *         ./share_producer /tmp/tandem.sock        # connects (retrying for up to 10 s)
 * Both exit 0 when the producer saw the doubled values in its own memory.
 *
 * Export only to programs you would hand a pointer to: the descriptor is that of the producer's
 * whole shared arena (see tdm_tensor_export() in tandem/tensor.h).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <tandem.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long (max %zu bytes)\n", sizeof addr.sun_path - 1);
        return 2;
    }
    strcpy(addr.sun_path, path);

    tdm_runtime *rt = NULL;
    tdm_tensor *t = NULL;
    int lsock = -1, conn = -1, status = 1;
    int rc = tdm_runtime_open(&rt, NULL);
    if (rc != 0) {
        fprintf(stderr, "tdm_runtime_open: %s: %s\n", tdm_status_name(rc), tdm_errmsg(NULL));
        return 1;
    }

    /* 1. Listen. A stale socket file from an earlier run would make bind() fail: remove it. */
    unlink(path);
    lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lsock < 0 || bind(lsock, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(lsock, 1) != 0) {
        fprintf(stderr, "consumer: cannot listen on %s: %s\n", path, strerror(errno));
        goto out;
    }
    printf("consumer: listening on %s\n", path);
    fflush(stdout);

    /* 2. Accept one producer, but do not wait forever. */
    struct pollfd pfd = {lsock, POLLIN, 0};
    int pr = poll(&pfd, 1, 30000);
    if (pr <= 0) {
        fprintf(stderr, "consumer: no producer within 30 s\n");
        goto out;
    }
    conn = accept(lsock, NULL, NULL);
    if (conn < 0) {
        fprintf(stderr, "consumer: accept: %s\n", strerror(errno));
        goto out;
    }

    /* 3. Import: the tensor is now mapped here; nothing was copied. */
    rc = tdm_tensor_import(rt, conn, &t);
    if (rc != 0) {
        fprintf(stderr, "tdm_tensor_import: %s: %s\n", tdm_status_name(rc), tdm_errmsg(rt));
        goto out;
    }
    if (tdm_tensor_dtype(t) != TDM_F64 || !tdm_tensor_is_contiguous(t)) {
        fprintf(stderr, "consumer: expected a contiguous f64 tensor, got %s\n",
                tdm_dtype_name(tdm_tensor_dtype(t)));
        goto out;
    }
    printf("consumer: imported a %s tensor of shape [", tdm_dtype_name(tdm_tensor_dtype(t)));
    for (int i = 0; i < tdm_tensor_ndim(t); i++)
        printf("%s%lld", i ? ", " : "", (long long)tdm_tensor_dim(t, i));
    double *x = tdm_tensor_data(t);
    int64_t n = tdm_tensor_numel(t);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    printf("] (%.1f MB, shared: %s), checksum %.6f\n", (double)tdm_tensor_nbytes(t) / 1e6,
           (tdm_tensor_mem(t) & TDM_MEM_SHARED) ? "yes" : "no", sum);

    /* 4. Write into the producer's memory, then tell it we are done. */
    for (int64_t i = 0; i < n; i++)
        x[i] *= 2.0;
    printf("consumer: doubled every element; replying\n");
    fflush(stdout);
    char ok = 'k';
    if (write(conn, &ok, 1) != 1) {
        fprintf(stderr, "consumer: reply failed: %s\n", strerror(errno));
        goto out;
    }
    status = 0;

out:
    /* The pages stay alive in the producer; releasing our mapping does not affect it. */
    tdm_tensor_release(t);
    if (conn >= 0)
        close(conn);
    if (lsock >= 0) {
        close(lsock);
        unlink(path);
    }
    if (tdm_runtime_close(rt) != 0)
        status = 1;
    return status;
}
