/* SPDX-License-Identifier: MIT */
/* The distributed runtime's communication: joining the ranks (MPI or a single rank) and the
 * few collectives and point-to-point transfers the rest is built from. tandem's traffic goes
 * over two duplicates of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so it never mixes with the
 * program's own messages and an MPI failure comes back as TDM_ECOMM instead of an abort. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"

/* Largest piece of one MPI transfer (counts are int). */
#define PIECE ((size_t)1 << 30)

#if TDM_HAVE_MPI

int tdm__mpi_err(tdm_dist *d, int mpi_rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(mpi_rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", mpi_rc);
    return tdm__err(d ? d->rt : NULL, TDM_ECOMM, "%s: MPI failed on rank %d: %s", what,
                    d ? d->rank : -1, text);
}

/* Whether an MPI launcher started this process (Open MPI's mpirun, or any PMIx / PMI one). */
static bool under_launcher(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
           getenv("PMI_SIZE");
}

int tdm__dcomm_open(tdm_dist *d, const tdm_dist_config *cfg)
{
    d->rank = 0;
    d->size = 1;
    d->mpi = false;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if ((cfg && cfg->single) || finalized || (!inited && !under_launcher()))
        return 0;
    int provided = MPI_THREAD_SINGLE, rc;
    if (!inited) {
        rc = MPI_Init_thread(cfg ? cfg->argc : NULL, cfg ? cfg->argv : NULL, MPI_THREAD_SERIALIZED,
                             &provided);
        if (rc != MPI_SUCCESS)
            return tdm__err(d->rt, TDM_ECOMM, "tdm_dist_open: MPI_Init_thread failed (%d)", rc);
        d->we_init = true;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_SERIALIZED) {
        if (d->we_init)
            MPI_Finalize();
        d->we_init = false;
        return tdm__err(d->rt, TDM_ECOMM,
                        "tdm_dist_open: MPI gives thread level %d; tandem needs "
                        "MPI_THREAD_SERIALIZED (initialise MPI with MPI_Init_thread)",
                        provided);
    }
    /* From here on errors come back as codes, on tandem's communicators. */
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->ctl);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->dat);
    if (rc != MPI_SUCCESS) {
        if (d->we_init)
            MPI_Finalize();
        d->we_init = false;
        return tdm__err(d->rt, TDM_ECOMM, "tdm_dist_open: MPI_Comm_dup failed (%d)", rc);
    }
    MPI_Comm_set_errhandler(d->ctl, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(d->dat, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->ctl, &d->rank);
    MPI_Comm_size(d->ctl, &d->size);
    int *ub = NULL, flag = 0;
    MPI_Comm_get_attr(d->ctl, MPI_TAG_UB, &ub, &flag);
    d->tag_ub = flag && ub ? *ub : 32767;
    d->mpi = true;
    return 0;
}

int tdm__dcomm_close(tdm_dist *d)
{
    if (!d->mpi)
        return 0;
    MPI_Comm_free(&d->ctl);
    MPI_Comm_free(&d->dat);
    d->mpi = false;
    if (d->we_init) {
        d->we_init = false;
        int rc = MPI_Finalize();
        if (rc != MPI_SUCCESS)
            return tdm__err(d->rt, TDM_ECOMM, "tdm_dist_close: MPI_Finalize failed (%d)", rc);
    }
    return 0;
}

int tdm__dcomm_allgather(tdm_dist *d, const void *mine, size_t bytes, void *all)
{
    if (!d->mpi) {
        memmove(all, mine, bytes);
        return 0;
    }
    if (bytes > INT_MAX)
        return tdm__err(d->rt, TDM_EINVAL, "allgather: %zu bytes is too many", bytes);
    int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, d->ctl);
    return rc == MPI_SUCCESS ? 0 : tdm__mpi_err(d, rc, "MPI_Allgather");
}

int tdm__dcomm_bcast(tdm_dist *d, void *buf, size_t bytes, int root)
{
    if (!d->mpi)
        return 0;
    for (size_t off = 0; off < bytes; off += PIECE) {
        size_t n = bytes - off < PIECE ? bytes - off : PIECE;
        int rc = MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, d->ctl);
        if (rc != MPI_SUCCESS)
            return tdm__mpi_err(d, rc, "MPI_Bcast");
    }
    return 0;
}

int tdm__dcomm_send(tdm_dist *d, const void *buf, size_t bytes, int dest, int tag)
{
    if (!d->mpi)
        return tdm__err(d->rt, TDM_EINVAL, "send: a single rank has no one to send to");
    for (size_t off = 0; off < bytes; off += PIECE) {
        size_t n = bytes - off < PIECE ? bytes - off : PIECE;
        int rc = MPI_Send((const char *)buf + off, (int)n, MPI_BYTE, dest, tag, d->dat);
        if (rc != MPI_SUCCESS)
            return tdm__mpi_err(d, rc, "MPI_Send");
    }
    return 0;
}

int tdm__dcomm_recv(tdm_dist *d, void *buf, size_t bytes, int src, int tag)
{
    if (!d->mpi)
        return tdm__err(d->rt, TDM_EINVAL, "recv: a single rank has no one to receive from");
    for (size_t off = 0; off < bytes; off += PIECE) {
        size_t n = bytes - off < PIECE ? bytes - off : PIECE;
        int rc = MPI_Recv((char *)buf + off, (int)n, MPI_BYTE, src, tag, d->dat, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return tdm__mpi_err(d, rc, "MPI_Recv");
    }
    return 0;
}

int tdm__dcomm_barrier(tdm_dist *d)
{
    if (!d->mpi)
        return 0;
    int rc = MPI_Barrier(d->ctl);
    return rc == MPI_SUCCESS ? 0 : tdm__mpi_err(d, rc, "MPI_Barrier");
}

int tdm__dist_agree(tdm_dist *d, int rc, const char *where)
{
    if (!d->mpi || d->size == 1)
        return rc;
    /* the lowest failing rank (MINLOC over "ok" flags), then its code and message */
    int in[2] = {rc == 0 ? 1 : 0, d->rank}, outv[2] = {1, 0};
    int mrc = MPI_Allreduce(in, outv, 1, MPI_2INT, MPI_MINLOC, d->ctl);
    if (mrc != MPI_SUCCESS)
        return tdm__mpi_err(d, mrc, where);
    if (outv[0] == 1)
        return 0;
    struct {
        int32_t rc;
        char msg[252];
    } w = {rc, ""};
    if (d->rank == outv[1])
        snprintf(w.msg, sizeof w.msg, "%s", tdm_errmsg(d->rt));
    mrc = MPI_Bcast(&w, (int)sizeof w, MPI_BYTE, outv[1], d->ctl);
    if (mrc != MPI_SUCCESS)
        return tdm__mpi_err(d, mrc, where);
    if (rc != 0)
        return rc;
    return tdm__err(d->rt, w.rc, "%s: rank %d failed: %s", where, outv[1], w.msg);
}

#else /* no MPI in this build: always a single rank */

int tdm__dcomm_open(tdm_dist *d, const tdm_dist_config *cfg)
{
    (void)cfg;
    d->rank = 0;
    d->size = 1;
    d->mpi = false;
    return 0;
}

int tdm__dcomm_close(tdm_dist *d)
{
    (void)d;
    return 0;
}

int tdm__dcomm_allgather(tdm_dist *d, const void *mine, size_t bytes, void *all)
{
    (void)d;
    memmove(all, mine, bytes);
    return 0;
}

int tdm__dcomm_bcast(tdm_dist *d, void *buf, size_t bytes, int root)
{
    (void)d, (void)buf, (void)bytes, (void)root;
    return 0;
}

int tdm__dcomm_send(tdm_dist *d, const void *buf, size_t bytes, int dest, int tag)
{
    (void)buf, (void)bytes, (void)dest, (void)tag;
    return tdm__err(d->rt, TDM_EINVAL, "send: a single rank has no one to send to");
}

int tdm__dcomm_recv(tdm_dist *d, void *buf, size_t bytes, int src, int tag)
{
    (void)buf, (void)bytes, (void)src, (void)tag;
    return tdm__err(d->rt, TDM_EINVAL, "recv: a single rank has no one to receive from");
}

int tdm__dcomm_barrier(tdm_dist *d)
{
    (void)d;
    return 0;
}

int tdm__dist_agree(tdm_dist *d, int rc, const char *where)
{
    (void)d, (void)where;
    return rc;
}

#endif
