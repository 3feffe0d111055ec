/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the compressed tensor-file reader (header, index, zstd / lz4 / deflate
 * chunks, checksums), into a new tensor and into an existing one. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    tdm_file_info fi;
    (void)tdm_file_info_get(g_rt, path, &fi);
    tdm_load_opts o = TDM_LOAD_OPTS_INIT;
    o.max_bytes = FUZZ_MAX_BYTES;
    tdm_tensor *t = NULL;
    if (tdm_load(g_rt, path, &o, &t) == 0) {
        fuzz_touch(t);
        /* Again into the tensor just made: the load_into path. */
        (void)tdm_load_into(g_rt, path, t);
        tdm_tensor_release(t);
    } else if (t) {
        abort();
    }
    return 0;
}
