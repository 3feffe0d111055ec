/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the .npz reader (zip directory, zip64, stored and deflated members). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    tdm_npz *z = NULL;
    if (tdm_npz_open(g_rt, path, &z) != 0) {
        if (z)
            abort();
        return 0;
    }
    int n = tdm_npz_count(z);
    for (int i = 0; i < n && i < 16; i++) {
        const char *name = tdm_npz_name(z, i);
        if (!name)
            abort();
        for (int m = 0; m < 2; m++) {
            tdm_load_opts o = TDM_LOAD_OPTS_INIT;
            o.mmap = m ? TDM_MMAP_READ : TDM_MMAP_NONE;
            o.max_bytes = FUZZ_MAX_BYTES;
            tdm_tensor *t = NULL;
            if (tdm_npz_load(z, name, &o, &t) == 0) {
                fuzz_touch(t);
                tdm_tensor_release(t);
            }
        }
    }
    tdm_npz_close(z);
    return 0;
}
