/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the .npy reader (header parser, loads with and without mmap). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    tdm_file_info fi;
    (void)tdm_file_info_get(g_rt, path, &fi);
    static const tdm_mmap_mode modes[] = {TDM_MMAP_NONE, TDM_MMAP_READ, TDM_MMAP_COPY};
    for (int m = 0; m < 3; m++) {
        tdm_load_opts o = TDM_LOAD_OPTS_INIT;
        o.mmap = modes[m];
        o.max_bytes = FUZZ_MAX_BYTES;
        o.c_order = m == 0 && size % 2;
        tdm_tensor *t = NULL;
        if (tdm_load(g_rt, path, &o, &t) == 0) {
            fuzz_touch(t);
            tdm_tensor_release(t);
        } else if (t) {
            abort(); /* a failed load must leave *out NULL */
        }
    }
    return 0;
}
