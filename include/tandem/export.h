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

#ifdef __cplusplus
#define TDM_BEGIN_DECLS extern "C" {
#define TDM_END_DECLS }
#else
#define TDM_BEGIN_DECLS
#define TDM_END_DECLS
#endif

#endif
