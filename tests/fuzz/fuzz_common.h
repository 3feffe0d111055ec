/* SPDX-License-Identifier: MIT */
/* Shared set-up of the tensor-file fuzz targets (libFuzzer): one runtime for the process, and a
 * memfd that holds the current input, opened by path (/proc/self/fd/N) so the readers run
 * exactly as on a real file. */
#ifndef TDM_FUZZ_COMMON_H
#define TDM_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tandem.h"

static tdm_runtime *g_rt;
static int g_fd = -1;
static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.threads = 1;
    cfg.use_env = 0;
    cfg.backends = "cpu";
    if (tdm_runtime_open(&g_rt, &cfg) != 0)
        abort();
    g_fd = memfd_create("tdm-fuzz", MFD_CLOEXEC);
    if (g_fd < 0)
        abort();
    snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    return 0;
}

/* Puts the input in the memfd; returns its path. */
static const char *fuzz_file(const uint8_t *data, size_t size)
{
    if (ftruncate(g_fd, 0) != 0)
        abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(g_fd, data + done, size - done, (off_t)done);
        if (w <= 0)
            abort();
        done += (size_t)w;
    }
    return g_path;
}

/* Loads must never allocate more than this in the fuzzer (the library bounds allocations by the
 * file's size; this also keeps each run fast). */
#define FUZZ_MAX_BYTES (64 << 20)

/* Touches every byte of a loaded tensor (so a mapping past the file would fault here). */
static void fuzz_touch(const tdm_tensor *t)
{
    volatile unsigned char sink = 0;
    const unsigned char *p = tdm_tensor_data(t);
    size_t n = tdm_tensor_nbytes(t);
    for (size_t i = 0; i < n; i += 512)
        sink ^= p[i];
    if (n)
        sink ^= p[n - 1];
    (void)sink;
}

#endif
