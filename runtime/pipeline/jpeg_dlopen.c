/* SPDX-License-Identifier: MIT */
/* libjpeg loaded with dlopen on first use (see jpeg_dlopen.h): a program that decodes no JPEG
 * never loads it, and libtandem runs where libjpeg is not installed (the decoders then return
 * TDM_ENODEV with the loader's message). The soname follows the ABI of the headers tandem was
 * compiled with (JPEG_LIB_VERSION 62: libjpeg.so.62, libjpeg-turbo's default), so the structs
 * the decoder fills have the layout the loaded library expects; jpeg_CreateDecompress checks
 * the version and struct size again. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#if TDM_HAVE_JPEG
#include <jpeglib.h>

#include "pipeline/jpeg_dlopen.h"

#define TDM_STR_(x) #x
#define TDM_STR(x) TDM_STR_(x)

tdm__jpeg_api tdm__jpeg;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_loaded;
static char g_why[320];

static void load(void)
{
    const char *lib = getenv("TDM_JPEG_LIBRARY");
    if (!lib || !*lib)
        lib = "libjpeg.so." TDM_STR(JPEG_LIB_VERSION);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_why, sizeof g_why, "cannot load libjpeg: dlopen(%s): %s", lib,
                 e ? e : "failed");
        return;
    }
    tdm__jpeg_api a;
    struct {
        void **slot;
        const char *name;
    } syms[] = {
        {(void **)&a.std_error, "jpeg_std_error"},
        {(void **)&a.CreateDecompress, "jpeg_CreateDecompress"},
        {(void **)&a.destroy_decompress, "jpeg_destroy_decompress"},
        {(void **)&a.stdio_src, "jpeg_stdio_src"},
        {(void **)&a.mem_src, "jpeg_mem_src"},
        {(void **)&a.read_header, "jpeg_read_header"},
        {(void **)&a.calc_output_dimensions, "jpeg_calc_output_dimensions"},
        {(void **)&a.start_decompress, "jpeg_start_decompress"},
        {(void **)&a.read_scanlines, "jpeg_read_scanlines"},
        {(void **)&a.finish_decompress, "jpeg_finish_decompress"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        /* (POSIX: a dlsym result converts to a function pointer through its representation) */
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            snprintf(g_why, sizeof g_why, "cannot load libjpeg: %s has no %s", lib,
                     syms[i].name);
            dlclose(h);
            return;
        }
    }
    tdm__jpeg = a;
    g_loaded = 1; /* the handle stays open for the life of the process */
}

const tdm__jpeg_api *tdm__jpeg_api_get(const char **why)
{
    pthread_once(&g_once, load);
    if (why)
        *why = g_loaded ? NULL : g_why;
    return g_loaded ? &tdm__jpeg : NULL;
}
#endif
