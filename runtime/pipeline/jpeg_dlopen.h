/* SPDX-License-Identifier: MIT */
/* tandem — libjpeg loaded at run time (runtime/pipeline/jpeg_dlopen.c). Not API.
 *
 * libtandem does not NEED libjpeg: the decoder (image_jpeg.c) is compiled against jpeglib.h and
 * calls libjpeg through these pointers, resolved once with dlopen the first time a JPEG is
 * decoded (or tdm_image_have_jpeg() asks). Include after <jpeglib.h>: the macros below send
 * the decoder's plain libjpeg calls through the table. */
#ifndef TANDEM_JPEG_DLOPEN_H
#define TANDEM_JPEG_DLOPEN_H

#include <stddef.h>
#include <stdio.h>

typedef struct tdm__jpeg_api {
    struct jpeg_error_mgr *(*std_error)(struct jpeg_error_mgr *err);
    void (*CreateDecompress)(j_decompress_ptr cinfo, int version, size_t structsize);
    void (*destroy_decompress)(j_decompress_ptr cinfo);
    void (*stdio_src)(j_decompress_ptr cinfo, FILE *infile);
    void (*mem_src)(j_decompress_ptr cinfo, const unsigned char *inbuffer, unsigned long insize);
    int (*read_header)(j_decompress_ptr cinfo, boolean require_image);
    void (*calc_output_dimensions)(j_decompress_ptr cinfo);
    boolean (*start_decompress)(j_decompress_ptr cinfo);
    JDIMENSION (*read_scanlines)(j_decompress_ptr cinfo, JSAMPARRAY scanlines,
                                 JDIMENSION max_lines);
    boolean (*finish_decompress)(j_decompress_ptr cinfo);
} tdm__jpeg_api;

/* The table once libjpeg is loaded (libjpeg.so.<JPEG_LIB_VERSION> of the headers tandem was
 * built with, e.g. libjpeg.so.62; env TDM_JPEG_LIBRARY names another path or soname, read at
 * the first call), else NULL with the reason in *why (static string). Thread-safe. */
const tdm__jpeg_api *tdm__jpeg_api_get(const char **why);

/* The decoder's calls go through the loaded table (valid once tdm__jpeg_api_get succeeded). */
extern tdm__jpeg_api tdm__jpeg;
#undef jpeg_create_decompress
#define jpeg_std_error (*tdm__jpeg.std_error)
#define jpeg_create_decompress(ci)                                                                 \
    tdm__jpeg.CreateDecompress((ci), JPEG_LIB_VERSION, sizeof(struct jpeg_decompress_struct))
#define jpeg_destroy_decompress (*tdm__jpeg.destroy_decompress)
#define jpeg_stdio_src (*tdm__jpeg.stdio_src)
#define jpeg_mem_src (*tdm__jpeg.mem_src)
#define jpeg_read_header (*tdm__jpeg.read_header)
#define jpeg_calc_output_dimensions (*tdm__jpeg.calc_output_dimensions)
#define jpeg_start_decompress (*tdm__jpeg.start_decompress)
#define jpeg_read_scanlines (*tdm__jpeg.read_scanlines)
#define jpeg_finish_decompress (*tdm__jpeg.finish_decompress)

#endif
