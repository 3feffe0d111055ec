/* SPDX-License-Identifier: MIT */
/* preprocess_images — an image input pipeline (torch's DataLoader / DALI) with tandem:
 *
 *   stage "decode" (worker processes): read a JPEG (libjpeg-turbo), RandomResizedCrop to
 *                  224x224 and a random horizontal flip, straight into the batch's slot
 *                  (u8 HWC, shared memory); a bad file fails its row (or is replaced)
 *   stage "normalize_u8" (a kernel: wherever the scheduler puts it, a device when one is
 *                  open): u8 HWC -> f32 CHW, (x / 255 - mean) / std
 *
 * and the consumer takes batches of 64 in order. Randomness comes from the pipeline's seed and
 * the row, so the same seed gives the same batches whichever backend ran them.
 *
 *   sample_preprocess_images [--images N] [--batch 64] [--workers 2] [--seed S]
 *                            [--variant jpeg|synthetic] [--on-bad skip|replace]
 *                            [--files a.jpg,b.jpg,...] [--data DIR] [--checksum]
 *
 * --variant synthetic makes u8 3x224x224 images from the seed instead of decoding (the
 * DataLoader comparison's variant a). Prints images/s for the whole run and in steady state
 * (after the ring has filled once), and `tandem_img_per_s X` (the steady state) for
 * bench/bench_dataloader.py. The photos are china.jpg and flower.jpg in --data DIR (default:
 * $TDM_DATA_DIR, else the source tree's tests/data), or the --files list.
 * Exit code 0 when every image was delivered; 1 on a failed call; 2 usage; 3 when the run
 * completed but some images failed (each is printed with its reason). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tandem.h>

#ifndef TDM_SAMPLE_DATA_DIR /* set by samples/CMakeLists.txt: the source tree's tests/data */
#define TDM_SAMPLE_DATA_DIR "tests/data"
#endif

enum { S = 224, MAX_FILES = 64, PATH_LEN = 512 };

typedef struct {
    char (*paths)[PATH_LEN]; /* shared tensor: the file list */
    int n_paths;
    int synthetic;
    int replace;
} decode_params;

static _Thread_local uint8_t *scratch;
static _Thread_local size_t scratch_cap;

/* Decodes paths[i] into the thread's scratch buffer; 0 or an error with err filled. */
static int decode(const char *path, tdm_image_info *info, char *err, size_t len)
{
    int rc = tdm_image_read_jpeg(path, TDM_IMAGE_JPEG_FAST, scratch, scratch_cap, info, err, len);
    if (rc == TDM_ENOSPC && info->bytes > 0) { /* grow to what it needs, once */
        uint8_t *p = realloc(scratch, info->bytes);
        if (!p)
            return TDM_ENOMEM;
        scratch = p;
        scratch_cap = info->bytes;
        rc = tdm_image_read_jpeg(path, TDM_IMAGE_JPEG_FAST, scratch, scratch_cap, info, err, len);
    }
    return rc;
}

static int stage_decode(const tdm_stage_io *io, int64_t begin, int64_t end, tdm_task *task)
{
    const decode_params *p = io->params;
    for (int64_t r = begin; r < end; r++) {
        uint8_t *out = io->out + r * io->out_row_bytes;
        tdm_rng rng = tdm_rng_seed(io->seed, (uint64_t)r);
        if (p->synthetic) {
            for (int64_t i = 0; i < S * S * 3; i += 8) {
                uint64_t v = tdm_rng_next(&rng);
                memcpy(out + i, &v, 8);
            }
            continue;
        }
        int64_t item = io->item0 + r;
        tdm_image_info info;
        char err[200];
        int rc = -1;
        for (int attempt = 0; attempt < (p->replace ? 4 : 1) && rc != 0; attempt++)
            rc = decode(p->paths[(item + attempt) % p->n_paths], &info, err, sizeof err);
        if (rc != 0) {
            char why[PATH_LEN + 220];
            snprintf(why, sizeof why, "%s: %s", p->paths[item % p->n_paths], err);
            tdm_stage_fail_row(io, r, why);
            continue;
        }
        tdm_image_crop crop;
        tdm_image_random_resized_crop_params(&rng, info.width, info.height, TDM_IMAGE_RRC_SCALE_MIN,
                                             TDM_IMAGE_RRC_SCALE_MAX, TDM_IMAGE_RRC_RATIO_MIN,
                                             TDM_IMAGE_RRC_RATIO_MAX, &crop, NULL, 0);
        int flip = tdm_rng_uniform(&rng) < 0.5;
        if (tdm_image_resize_crop(scratch, info.width, info.height, 3, &crop, out, S, S, flip, err,
                                  sizeof err) != 0)
            tdm_stage_fail_row(io, r, err);
    }
    (void)task;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: sample_preprocess_images [--images N] [--batch B] [--workers P] "
                    "[--seed S] [--variant jpeg|synthetic] [--on-bad skip|replace] "
                    "[--files a.jpg,b.jpg,...] [--data DIR] [--checksum]\n");
    return 2;
}

int main(int argc, char **argv)
{
    long images = 512, batch = 64, workers = 2;
    unsigned long long seed = 0;
    int synthetic = 0, replace = 0, checksum = 0;
    const char *files = NULL, *data = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--checksum")) {
            checksum = 1;
            continue;
        }
        if (!v)
            return usage();
        i++;
        if (!strcmp(a, "--images"))
            images = strtol(v, NULL, 10);
        else if (!strcmp(a, "--batch"))
            batch = strtol(v, NULL, 10);
        else if (!strcmp(a, "--workers"))
            workers = strtol(v, NULL, 10);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--variant") && (!strcmp(v, "jpeg") || !strcmp(v, "synthetic")))
            synthetic = !strcmp(v, "synthetic");
        else if (!strcmp(a, "--on-bad") && (!strcmp(v, "skip") || !strcmp(v, "replace")))
            replace = !strcmp(v, "replace");
        else if (!strcmp(a, "--files"))
            files = v;
        else if (!strcmp(a, "--data"))
            data = v;
        else
            return usage();
    }
    if (images < 1 || batch < 1 || workers < 0 || workers > 64)
        return usage();
    if (!synthetic && !tdm_image_have_jpeg()) {
        fprintf(stderr, "this tandem was built without libjpeg: use --variant synthetic\n");
        return 1;
    }

    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.procs = (int)workers;
    tdm_runtime *rt;
    int rc = tdm_runtime_open(&rt, &cfg);
    if (rc != 0) {
        fprintf(stderr, "tdm_runtime_open: %s\n", tdm_errmsg(NULL));
        return 1;
    }
    /* The file list in shared memory: worker processes read it. */
    tdm_tensor *paths_t;
    rc = tdm_tensor_zeros(rt, TDM_U8, 2, (int64_t[]){MAX_FILES, PATH_LEN}, TDM_MEM_SHARED, &paths_t);
    char(*paths)[PATH_LEN] = rc == 0 ? tdm_tensor_data(paths_t) : NULL;
    int n_paths = 0;
    if (files) {
        char buf[MAX_FILES * 64];
        snprintf(buf, sizeof buf, "%s", files);
        for (char *s = NULL, *t = strtok_r(buf, ",", &s); t && n_paths < MAX_FILES;
             t = strtok_r(NULL, ",", &s))
            snprintf(paths[n_paths++], PATH_LEN, "%s", t);
    } else {
        const char *env = getenv("TDM_DATA_DIR");
        const char *dir = data ? data : env && *env ? env : TDM_SAMPLE_DATA_DIR;
        snprintf(paths[n_paths++], PATH_LEN, "%s/china.jpg", dir);
        snprintf(paths[n_paths++], PATH_LEN, "%s/flower.jpg", dir);
    }
    decode_params dp = {paths, n_paths, synthetic, replace};
    tdm_normalize_params np = {{0.485f, 0.456f, 0.406f, 0}, {0.229f, 0.224f, 0.225f, 1}, 0, 0};
    tdm_stage st[2] = {
        {.name = "decode", .fn = stage_decode, .params = &dp, .params_size = sizeof dp,
         .dtype = TDM_U8, .row_ndim = 3, .row_shape = {S, S, 3},
         .policy = workers > 0 ? TDM_POLICY_PROCS : TDM_POLICY_THREADS, .sub_batch = 1},
        {.kernel = "normalize_u8", .params = &np, .params_size = sizeof np, .dtype = TDM_F32,
         .row_ndim = 3, .row_shape = {3, S, S}},
    };
    tdm_pipeline_opts po = TDM_PIPELINE_OPTS_INIT;
    po.batch_rows = batch;
    po.seed = seed;
    po.depth = 2 * (int)(workers > 0 ? workers : 1) + 2;
    tdm_pipeline *p;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (rc != 0 || (rc = tdm_pipeline_open(rt, st, 2, images, &po, &p)) != 0) {
        fprintf(stderr, "tdm_pipeline_open: %s\n", tdm_errmsg(rt));
        return 1;
    }
    tdm_pipeline_batch b;
    int64_t failed = 0, batches = 0, warm_images = 0;
    double sum = 0;
    struct timespec tw = t0;
    while ((rc = tdm_pipeline_next(p, &b)) == 0) {
        batches++;
        if (batches == po.depth) { /* the ring is full once: steady state from here */
            clock_gettime(CLOCK_MONOTONIC, &tw);
            warm_images = b.item0 + b.rows;
        }
        failed += b.failed_rows;
        for (int64_t r = 0; r < b.rows; r++)
            if (!b.row_ok[r])
                fprintf(stderr, "image %lld skipped: %s\n", (long long)(b.item0 + r),
                        tdm_pipeline_row_reason(p, r));
        if (checksum) { /* the consumer reads the batch (first pixel of each channel) */
            const float *x = tdm_tensor_data(b.out);
            for (int64_t r = 0; r < b.rows; r++)
                if (b.row_ok[r])
                    sum += x[r * 3 * S * S] + x[r * 3 * S * S + S * S] +
                           x[r * 3 * S * S + 2 * S * S];
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    double steady_s = (double)(t1.tv_sec - tw.tv_sec) + 1e-9 * (double)(t1.tv_nsec - tw.tv_nsec);
    /* Images/s once the ring has been filled (start-up, page first-touch and the first
     * exploration batches excluded, as the DataLoader benchmark's warm-up epoch excludes
     * its workers' start); the whole run when it is too short for that. */
    double steady = warm_images > 0 && images > warm_images && steady_s > 0
                        ? (double)(images - warm_images) / steady_s
                        : (double)images / wall;
    tdm_pipeline_stats ps;
    tdm_pipeline_stats_get(p, &ps);
    printf("%s: %ld images in %lld batches of %ld, %ld worker process(es): %.3f s, %.0f images/s; "
           "%lld failed; slots %.1f MB allocated once\n",
           synthetic ? "synthetic" : "jpeg", images, (long long)batches, batch, workers, wall,
           (double)images / wall, (long long)failed, (double)ps.slot_bytes / 1e6);
    if (checksum)
        printf("checksum %.6f\n", sum);
    printf("copies per byte from worker to consumer: 0 (workers decode into the shared slot; the "
           "normalize stage reads it in place; a device would read the pinned slot by DMA)\n");
    printf("steady state (after the first %d batches): %.0f images/s\n", po.depth, steady);
    printf("tandem_img_per_s %.1f\n", steady);
    tdm_pipeline_close(p);
    tdm_tensor_release(paths_t);
    tdm_runtime_close(rt);
    if (rc != TDM_EDONE)
        return 1;
    if (failed > 0) {
        fprintf(stderr, "%lld of %ld images failed\n", (long long)failed, images);
        return 3;
    }
    return 0;
}
