/* SPDX-License-Identifier: MIT */
/* tandem — symbol export macro. */
#ifndef TANDEM_EXPORT_H
#define TANDEM_EXPORT_H

#if defined(TDM_STATIC_DEFINE)
#define TDM_EXTERN
#elif defined(__GNUC__) || defined(__clang__)
#define TDM_EXTERN __attribute__((visibility("default")))
#else
#define TDM_EXTERN
#endif

/* TDM_ALIGNAS(n): alignment of a struct member, spelled for C11 or C++11. */
#ifdef __cplusplus
#define TDM_ALIGNAS(n) alignas(n)
#else
#define TDM_ALIGNAS(n) _Alignas(n)
#endif

/* The declarations have C linkage when the headers are included from C++. The *_INIT macros
 * that C writes with designated initialisers (tdm_report, tdm_sim_config, ...) have a C++
 * spelling (a value-initialised struct with the same fields set), so `T x = T_INIT;` works in
 * both languages from C++11 on. */
#ifdef __cplusplus
#define TDM_BEGIN_DECLS extern "C" {
#define TDM_END_DECLS }
#else
#define TDM_BEGIN_DECLS
#define TDM_END_DECLS
#endif

#endif
