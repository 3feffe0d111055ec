/* SPDX-License-Identifier: MIT */
/* tandem — the built-in kernels compiled by nvcc.
 *
 * builtin_kernels.h defines its TDM_KERNEL entry points (extern "C" __global__) whenever it is
 * read as CUDA, so including it is all it takes to compile every entry point for the
 * architectures in CMAKE_CUDA_ARCHITECTURES. Today this object is a compile check that keeps
 * the dialect valid CUDA (there is no GPU in CI); the CUDA backend will launch these entries.
 */
#include "builtin_kernels.h"
#include "train_kernels.h"
