/* SPDX-License-Identifier: MIT */
/* A private temporary directory for the tests of one executable: mk_tmpdir() makes
 * /tmp/<TDM_TMPDIR_PREFIX>-XXXXXX (the includer may define the prefix), P(name) is a path in it
 * (eight rotating buffers per thread), rm_tmpdir() removes it with everything inside. */
#ifndef TDM_TMPDIR_UTIL_H
#define TDM_TMPDIR_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tdm_test.h"

#ifndef TDM_TMPDIR_PREFIX
#define TDM_TMPDIR_PREFIX "tdm-test"
#endif

static char g_dir[64];

static inline void mk_tmpdir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/" TDM_TMPDIR_PREFIX "-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
}

static inline int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static inline void rm_tmpdir(void)
{
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline const char *P(const char *name)
{
    static _Thread_local char buf[8][512];
    static _Thread_local int i;
    char *b = buf[i++ % 8];
    snprintf(b, 512, "%s/%s", g_dir, name);
    return b;
}

#endif
