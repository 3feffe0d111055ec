/* SPDX-License-Identifier: MIT */
/* hogwild — PyTorch's torch.multiprocessing "Hogwild!" example in C with tandem: P worker
 * processes train ONE model together, lock-free.
 *
 * The model is the MLP of train_mlp.c (64 -> 128 -> 10, ReLU, softmax cross-entropy) on the
 * digits data set (same stratified 80/20 split), trained with SGD + momentum. Its parameters
 * live in TDM_MEM_SHARED tensors, so every worker process sees the same bytes at the same
 * address. One epoch is one tdm_parallel_for over P items (policy TDM_POLICY_PROCS,
 * batch_size 1): item p is worker p running its own loop over its shard of the training set
 * in mini-batches of 32, reading the shared weights, computing the gradient of its mini-batch
 * and writing the update straight back into the shared weights — with NO lock and NO atomics.
 *
 * Hogwild! (Niu, Recht, Re, Wright 2011): the workers race on the weights on purpose. A worker
 * may read a weight matrix half-updated by another one, and two read-modify-writes of the
 * same weight may interleave so that one update is lost. For sparse or small updates the
 * lost/stale updates act like a little extra noise in SGD and the model still converges,
 * while the workers never wait for each other. These races are accepted by design here:
 * plain float loads and stores, intentionally (torch's example does the same with
 * model.share_memory()). They are between separate processes, so no thread sanitizer sees
 * them; within this program the parent reads the weights (evaluation) only between epochs,
 * after tdm_parallel_for() has returned and no worker runs.
 *
 * Everything a worker touches is in shared tensors created after tdm_runtime_open(): the
 * workers are forked when the runtime opens and do not see memory the parent allocates
 * afterwards (malloc, static buffers written later), only the runtime's shared arena. The
 * parallel_for's parameter block carries raw pointers into those tensors (valid in the
 * workers: same address), each worker's shard bounds and seed.
 *
 * After the P-process run the same training (same initial weights, one shard of all rows)
 * runs again with 1 worker process, in a second runtime, for the speed-up.
 *
 * The optimiser is torch.optim.SGD's: v = momentum * v + g + weight_decay * w; w -= lr * v,
 * each worker with its own momentum buffer (as each torch process has its own optimiser), the
 * learning rate decayed along a cosine from --lr to 0 over the epochs. With the defaults the
 * 2-process run reaches 96.9-98.9% test accuracy on seeds 0..4 (seed 0's split is the hardest).
 *
 *   sample_hogwild [--procs 2] [--epochs 30] [--lr 0.25] [--momentum 0.9]
 *                  [--weight-decay 0.001] [--seed 0] [--data digits.csv.gz]
 *                  [--min-acc 0.955] [--quiet]
 *
 * Exit code: 0; 1 when a tandem call fails or the P-process test accuracy is below
 * --min-acc; 2 usage. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include <tandem.h>

#ifndef TDM_SAMPLE_DATA_DIR /* set by samples/CMakeLists.txt: the source tree's tests/data */
#define TDM_SAMPLE_DATA_DIR "tests/data"
#endif

enum { F = 64, H = 128, C = 10, MAX_ROWS = 2000, B = 32, MAX_PROCS = 64 };
enum { NW1 = F * H, NB1 = H, NW2 = H * C, NB2 = C, NPARAM = NW1 + NB1 + NW2 + NB2 };

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* splitmix64, as train_mlp.c; the workers use their own state (rng_next on a local). */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform_s(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t rng_state;
static double uniform(void)
{
    return uniform_s(&rng_state);
}

static void shuffle_s(int32_t *v, int n, uint64_t *s)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(uniform_s(s) * (i + 1));
        int32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static void shuffle(int *v, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(uniform() * (i + 1)), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the worker: one epoch of plain SGD over its shard, lock-free on the shared weights ---- */

/* The parameter block of the parallel_for, copied by value for each call. Every pointer points
 * into a TDM_MEM_SHARED tensor, so it is valid in the worker processes too. */
typedef struct hog_params {
    float *w1, *b1, *w2, *b2; /* the ONE model: [F][H], [H], [H][C], [C] (shared, raced on) */
    float *mom;               /* [P][NPARAM]: worker p's own momentum buffer (row p only) */
    const float *x;           /* [n_train][F] training features */
    const int32_t *y;         /* [n_train] labels */
    int32_t *order;           /* [n_train] a permutation; worker p shuffles its shard of it */
    double *stats;            /* [P][3]: loss sum, correct, steps of worker p in this epoch */
    int64_t lo[MAX_PROCS], hi[MAX_PROCS]; /* worker p's shard: order[lo[p] .. hi[p]) */
    uint64_t seed[MAX_PROCS];             /* worker p's seed (mixed with the epoch) */
    int epoch;
    float lr, momentum, weight_decay;
} hog_params;

/* Forward of `rows` rows (x: [rows][F]) with the given weights: h [rows][H] (ReLU), z [rows][C].
 * Shared with the parent's evaluation. */
static void forward(const float *w1, const float *b1, const float *w2, const float *b2,
                    const float *x, int rows, float *h, float *z)
{
    for (int r = 0; r < rows; r++) {
        float *hr = h + (size_t)r * H;
        for (int j = 0; j < H; j++)
            hr[j] = b1[j];
        for (int k = 0; k < F; k++) {
            float xv = x[(size_t)r * F + k];
            if (xv == 0)
                continue; /* about half the pixels are 0 */
            const float *wk = w1 + (size_t)k * H;
            for (int j = 0; j < H; j++)
                hr[j] += xv * wk[j];
        }
        for (int j = 0; j < H; j++)
            hr[j] = hr[j] > 0 ? hr[j] : 0;
        float *zr = z + (size_t)r * C;
        for (int c = 0; c < C; c++)
            zr[c] = b2[c];
        for (int j = 0; j < H; j++) {
            float hv = hr[j];
            const float *wj = w2 + (size_t)j * C;
            for (int c = 0; c < C; c++)
                zr[c] += hv * wj[c];
        }
    }
}

/* One worker, one epoch. Item p of the parallel_for (batch_size 1, so [begin, end) = [p, p+1)). */
static int worker_epoch(const void *params, int64_t begin, int64_t end, tdm_task *task)
{
    const hog_params *P = params;
    (void)task;
    for (int64_t p = begin; p < end; p++) {
        uint64_t s = P->seed[p] ^ (0x9E3779B97F4A7C15ull * (uint64_t)(P->epoch + 1));
        int64_t lo = P->lo[p], hi = P->hi[p];
        shuffle_s(P->order + lo, (int)(hi - lo), &s); /* this worker's rows only: no race */
        float *mom = P->mom + (size_t)p * NPARAM;
        float *mw1 = mom, *mb1 = mw1 + NW1, *mw2 = mb1 + NB1, *mb2 = mw2 + NW2;
        /* Worker-local scratch, private to this process (malloc'd here, in the worker). */
        float *scratch = malloc((size_t)(B * F + 2 * B * H + 2 * B * C + NPARAM) * sizeof(float));
        if (!scratch)
            return TDM_ENOMEM;
        float *xb = scratch, *h = xb + B * F, *dh = h + B * H, *z = dh + B * H, *dz = z + B * C;
        float *gw1 = dz + B * C, *gb1 = gw1 + NW1, *gw2 = gb1 + NB1, *gb2 = gw2 + NW2;
        double loss_sum = 0;
        int correct = 0, steps = 0;
        for (int64_t s0 = lo; s0 < hi; s0 += B) {
            int rows = (int)(hi - s0 < B ? hi - s0 : B);
            int yb[B];
            for (int r = 0; r < rows; r++) {
                int32_t i = P->order[s0 + r];
                memcpy(xb + (size_t)r * F, P->x + (size_t)i * F, F * sizeof(float));
                yb[r] = P->y[i];
            }
            /* Forward with whatever the shared weights hold right now: another worker may be
             * writing them meanwhile (Hogwild!: intended). */
            forward(P->w1, P->b1, P->w2, P->b2, xb, rows, h, z);
            /* softmax cross-entropy: dz = (softmax(z) - onehot(y)) / rows */
            float inv = 1.0f / (float)rows;
            for (int r = 0; r < rows; r++) {
                const float *zr = z + (size_t)r * C;
                float *dr = dz + (size_t)r * C;
                int arg = 0;
                for (int c = 1; c < C; c++)
                    if (zr[c] > zr[arg])
                        arg = c;
                float mx = zr[arg], sum = 0;
                for (int c = 0; c < C; c++) {
                    dr[c] = expf(zr[c] - mx);
                    sum += dr[c];
                }
                loss_sum += -(double)(zr[yb[r]] - mx - logf(sum));
                correct += arg == yb[r];
                for (int c = 0; c < C; c++)
                    dr[c] = (dr[c] / sum - (c == yb[r])) * inv;
            }
            /* backward: gw2 = h^T dz, gb2 = colsum dz, dh = (dz W2^T) * relu'(h),
             *           gw1 = x^T dh,  gb1 = colsum dh */
            memset(gw1, 0, NPARAM * sizeof(float)); /* gw1, gb1, gw2, gb2 */
            for (int r = 0; r < rows; r++) {
                const float *hr = h + (size_t)r * H, *dr = dz + (size_t)r * C;
                float *dhr = dh + (size_t)r * H;
                for (int c = 0; c < C; c++)
                    gb2[c] += dr[c];
                for (int j = 0; j < H; j++) {
                    float hv = hr[j], acc = 0;
                    const float *wj = P->w2 + (size_t)j * C;
                    for (int c = 0; c < C; c++) {
                        gw2[(size_t)j * C + c] += hv * dr[c];
                        acc += dr[c] * wj[c];
                    }
                    dhr[j] = hv > 0 ? acc : 0;
                }
                const float *xr = xb + (size_t)r * F;
                for (int j = 0; j < H; j++)
                    gb1[j] += dhr[j];
                for (int k = 0; k < F; k++) {
                    float xv = xr[k];
                    if (xv == 0)
                        continue;
                    float *gk = gw1 + (size_t)k * H;
                    for (int j = 0; j < H; j++)
                        gk[j] += xv * dhr[j];
                }
            }
            /* The lock-free update. INTENTIONAL data race: plain loads and stores into the
             * shared weights, no lock, no atomics — another process may update the same
             * weight between our load and our store, and that update is then lost. This is
             * Hogwild!; do not "fix" it with atomics or a mutex. (The momentum buffer is this
             * worker's own row: no race there.) */
            struct {
                float *w, *m;
                const float *g;
                int n;
                float wd;
            } upd[4] = {{P->w1, mw1, gw1, NW1, P->weight_decay},
                        {P->b1, mb1, gb1, NB1, 0},
                        {P->w2, mw2, gw2, NW2, P->weight_decay},
                        {P->b2, mb2, gb2, NB2, 0}};
            for (int u = 0; u < 4; u++) {
                float *w = upd[u].w, *m = upd[u].m;
                const float *g = upd[u].g;
                float lr = P->lr, mu = P->momentum, wd = upd[u].wd;
                for (int i = 0; i < upd[u].n; i++) {
                    float wv = w[i];
                    m[i] = mu * m[i] + g[i] + wd * wv;
                    w[i] = wv - lr * m[i];
                }
            }
            steps++;
        }
        free(scratch);
        P->stats[p * 3 + 0] = loss_sum;
        P->stats[p * 3 + 1] = correct;
        P->stats[p * 3 + 2] = steps;
    }
    return 0;
}

/* ---- the parent ---- */

typedef struct {
    const char *data;
    int procs, epochs, quiet;
    double lr, momentum, weight_decay, min_acc;
    uint64_t seed;
} options;

typedef struct {
    double acc, wall, steps;
} result;

/* digits.csv.gz: 64 features (0..16) then the label, one sample a line (train_mlp.c's). */
static int load(const char *path, float *x, int *y)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    char line[1024];
    int n = 0;
    while (n < MAX_ROWS && gzgets(f, line, sizeof line)) {
        char *p = line, *end;
        int k;
        for (k = 0; k <= F; k++) {
            double v = strtod(p, &end);
            if (end == p)
                break;
            if (k < F)
                x[n * F + k] = (float)(v / 16.0);
            else
                y[n] = (int)v;
            p = end + (*end == ',');
        }
        if (k == F + 1 && y[n] >= 0 && y[n] < C)
            n++;
    }
    gzclose(f);
    return n;
}

static double parse_num(const char *v, int *bad)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end)
        *bad = 1;
    return d;
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){TDM_SAMPLE_DATA_DIR "/digits.csv.gz", 2, 30, 0, 0.25, 0.9, 1e-3, 0, 0};
    /* The data: --data FILE, else $TDM_DATA_DIR/digits.csv.gz, else the copy in the source
     * tree (tests/data, the build's default). */
    const char *env = getenv("TDM_DATA_DIR");
    static char path[4096];
    if (env && *env) {
        snprintf(path, sizeof path, "%s/digits.csv.gz", env);
        o->data = path;
    }
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (!strcmp(a, "--data"))
            o->data = v;
        else if (!strcmp(a, "--procs"))
            o->procs = (int)parse_num(v, &bad);
        else if (!strcmp(a, "--epochs"))
            o->epochs = (int)parse_num(v, &bad);
        else if (!strcmp(a, "--lr"))
            o->lr = parse_num(v, &bad);
        else if (!strcmp(a, "--momentum"))
            o->momentum = parse_num(v, &bad);
        else if (!strcmp(a, "--weight-decay"))
            o->weight_decay = parse_num(v, &bad);
        else if (!strcmp(a, "--seed"))
            o->seed = (uint64_t)parse_num(v, &bad);
        else if (!strcmp(a, "--min-acc"))
            o->min_acc = parse_num(v, &bad);
        else
            return -1;
    }
    if (bad || o->procs < 1 || o->procs > MAX_PROCS || o->epochs < 1 || !(o->lr > 0) ||
        !(o->momentum >= 0 && o->momentum < 1) || !(o->weight_decay >= 0))
        return -1;
    return 0;
}

static tdm_tensor *shared(tdm_runtime *rt, tdm_dtype dt, int64_t n, int *rc)
{
    tdm_tensor *t = NULL;
    *rc = tdm_tensor_zeros(rt, dt, 1, &n, TDM_MEM_SHARED, &t);
    return t;
}

/* Trains from the initial weights `init` with `procs` worker processes in a runtime of its
 * own, evaluating on the test set after every epoch. Returns 0 or 1. */
static int train(const options *o, int procs, const float *init, const float *X, const int *Y,
                 const int *train_idx, int n_train, const float *xt, const int *yt, int n_test,
                 result *res)
{
    tdm_runtime *rt = NULL;
    tdm_tensor *t_par = NULL, *t_mom = NULL, *t_x = NULL, *t_y = NULL, *t_ord = NULL,
               *t_stats = NULL;
    float *ht = NULL, *zt = NULL;
    int status = 1, rc = 0;

    tdm_config cfg = TDM_CONFIG_INIT;
    cfg.procs = procs; /* the workers are forked now, in tdm_runtime_open() */
    cfg.use_env = 0;   /* --procs decides, not TDM_NUM_PROCS */
    cfg.sched_model_dir = "off";
    CHECK(tdm_runtime_open(&rt, &cfg));

    /* Everything the workers touch: shared tensors, created after the open. */
    t_par = shared(rt, TDM_F32, NPARAM, &rc);
    CHECK(rc);
    t_mom = shared(rt, TDM_F32, (int64_t)procs * NPARAM, &rc);
    CHECK(rc);
    t_x = shared(rt, TDM_F32, (int64_t)n_train * F, &rc);
    CHECK(rc);
    t_y = shared(rt, TDM_I32, n_train, &rc);
    CHECK(rc);
    t_ord = shared(rt, TDM_I32, n_train, &rc);
    CHECK(rc);
    t_stats = shared(rt, TDM_F64, (int64_t)procs * 3, &rc);
    CHECK(rc);

    float *par = tdm_tensor_data(t_par), *xs = tdm_tensor_data(t_x);
    int32_t *ys = tdm_tensor_data(t_y), *ord = tdm_tensor_data(t_ord);
    double *stats = tdm_tensor_data(t_stats);
    memcpy(par, init, NPARAM * sizeof(float));
    for (int i = 0; i < n_train; i++) {
        memcpy(xs + (size_t)i * F, X + (size_t)train_idx[i] * F, F * sizeof(float));
        ys[i] = Y[train_idx[i]];
        ord[i] = i;
    }
    /* One shuffle up front (the split lists the rows class by class), then the shards stay:
     * worker p owns order[lo[p] .. hi[p]) and reshuffles it every epoch with its own seed. */
    uint64_t s = o->seed * 7919 + 17;
    shuffle_s(ord, n_train, &s);

    hog_params prm;
    memset(&prm, 0, sizeof prm);
    prm.w1 = par;
    prm.b1 = par + NW1;
    prm.w2 = par + NW1 + NB1;
    prm.b2 = par + NW1 + NB1 + NW2;
    prm.mom = tdm_tensor_data(t_mom);
    prm.x = xs;
    prm.y = ys;
    prm.order = ord;
    prm.stats = stats;
    for (int p = 0; p < procs; p++) {
        prm.lo[p] = (int64_t)n_train * p / procs;
        prm.hi[p] = (int64_t)n_train * (p + 1) / procs;
        prm.seed[p] = o->seed * 1000003u + (uint64_t)p + 1; /* as torch.manual_seed(seed + rank) */
    }
    prm.lr = (float)o->lr;
    prm.momentum = (float)o->momentum;
    prm.weight_decay = (float)o->weight_decay;

    tdm_map_opts mo = TDM_MAP_OPTS_INIT;
    mo.policy = TDM_POLICY_PROCS; /* worker processes, not threads */
    mo.batch_size = 1;            /* one item (= one worker's epoch) per batch */
    mo.progress = TDM_PROGRESS_OFF;

    ht = malloc((size_t)n_test * H * sizeof(float));
    zt = malloc((size_t)n_test * C * sizeof(float));
    if (!ht || !zt) {
        fprintf(stderr, "out of memory\n");
        goto fail;
    }
    if (!o->quiet)
        printf("-- %d worker process%s, shards of %d-%d rows, batch %d\n", procs,
               procs > 1 ? "es" : "", n_train / procs, (n_train + procs - 1) / procs, B);
    double wall = 0, steps = 0, acc = 0;
    for (int e = 1; e <= o->epochs; e++) {
        prm.epoch = e;
        /* cosine learning-rate decay over the epochs: large steps first, small ones to settle */
        prm.lr = (float)(o->lr * 0.5 * (1 + cos(3.14159265358979323846 * (e - 1) / o->epochs)));
        double t0 = now_s();
        CHECK(tdm_parallel_for(rt, procs, worker_epoch, &prm, sizeof prm, &mo, NULL));
        wall += now_s() - t0;
        /* The workers are done with this epoch: the parent alone reads the weights now. */
        double loss = 0, correct = 0;
        for (int p = 0; p < procs; p++) {
            loss += stats[p * 3 + 0];
            correct += stats[p * 3 + 1];
            steps += stats[p * 3 + 2];
        }
        forward(prm.w1, prm.b1, prm.w2, prm.b2, xt, n_test, ht, zt);
        int ok = 0;
        for (int i = 0; i < n_test; i++) {
            const float *zr = zt + (size_t)i * C;
            int arg = 0;
            for (int c = 1; c < C; c++)
                if (zr[c] > zr[arg])
                    arg = c;
            ok += arg == yt[i];
        }
        acc = (double)ok / n_test;
        if (!o->quiet || e == o->epochs)
            printf("procs %d  epoch %3d/%d  loss %.4f  train acc %.4f  test acc %.4f\n", procs, e,
                   o->epochs, loss / n_train, correct / n_train, acc);
    }
    printf("procs %d: %.0f steps in %.3f s: %.0f steps/s (%.0f samples/s), test accuracy %.4f\n",
           procs, steps, wall, steps / wall, (double)o->epochs * n_train / wall, acc);
    res->acc = acc;
    res->wall = wall;
    res->steps = steps;
    status = 0;

fail:
    free(ht);
    free(zt);
    tdm_tensor *all[] = {t_par, t_mom, t_x, t_y, t_ord, t_stats};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
    if (rt && tdm_runtime_close(rt) != 0) {
        fprintf(stderr, "tdm_runtime_close: %s\n", tdm_errmsg(rt));
        status = 1;
    }
    return status;
}

int main(int argc, char **argv)
{
    options o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr,
                "usage: sample_hogwild [--procs N (1..%d)] [--epochs N] [--lr X] "
                "[--momentum X (0..1)] [--weight-decay X] [--seed S] [--data FILE] "
                "[--min-acc X] [--quiet]\n",
                MAX_PROCS);
        return 2;
    }
    static float X[MAX_ROWS * F];
    static int Y[MAX_ROWS];
    int n = load(o.data, X, Y);
    if (n < 100) {
        fprintf(stderr, "%s: %d samples read\n", o.data, n);
        return 1;
    }
    rng_state = o.seed;
    /* stratified split: 20% of each class to the test set (train_mlp.c's) */
    static int train_idx[MAX_ROWS], test_idx[MAX_ROWS];
    int n_train = 0, n_test = 0;
    for (int c = 0; c < C; c++) {
        int idx[MAX_ROWS], m = 0;
        for (int i = 0; i < n; i++)
            if (Y[i] == c)
                idx[m++] = i;
        shuffle(idx, m);
        int t = (int)lround(0.2 * m);
        for (int i = 0; i < m; i++) {
            if (i < t)
                test_idx[n_test++] = idx[i];
            else
                train_idx[n_train++] = idx[i];
        }
    }
    if (o.procs > n_train) {
        fprintf(stderr, "--procs %d: more workers than the %d training rows\n", o.procs, n_train);
        return 2;
    }
    /* The test set stays in the parent's private memory: only the parent evaluates. */
    static float XT[MAX_ROWS * F];
    static int YT[MAX_ROWS];
    for (int i = 0; i < n_test; i++) {
        memcpy(XT + (size_t)i * F, X + (size_t)test_idx[i] * F, F * sizeof(float));
        YT[i] = Y[test_idx[i]];
    }
    /* Initial weights (Glorot uniform, zero biases), the same for both runs. */
    static float init[NPARAM];
    double s1 = sqrt(6.0 / (F + H)), s2 = sqrt(6.0 / (H + C));
    for (int i = 0; i < NW1; i++)
        init[i] = (float)((2 * uniform() - 1) * s1);
    for (int i = 0; i < NW2; i++)
        init[NW1 + NB1 + i] = (float)((2 * uniform() - 1) * s2);

    printf("digits: %d samples, %d train / %d test (stratified), MLP %d-%d-%d, Hogwild! SGD "
           "lr %g momentum %g, batch %d, %d epochs\n",
           n, n_train, n_test, F, H, C, o.lr, o.momentum, B, o.epochs);
    result rp = {0, 0, 0}, r1 = {0, 0, 0};
    if (train(&o, o.procs, init, X, Y, train_idx, n_train, XT, YT, n_test, &rp) != 0)
        return 1;
    if (o.procs > 1) {
        /* The same training with one worker process: a second runtime. */
        if (train(&o, 1, init, X, Y, train_idx, n_train, XT, YT, n_test, &r1) != 0)
            return 1;
        printf("%d processes vs 1: %.2fx steps/s (%.0f vs %.0f steps/s); test accuracy %.4f "
               "(%d processes) vs %.4f (1 process)\n",
               o.procs, (rp.steps / rp.wall) / (r1.steps / r1.wall), rp.steps / rp.wall,
               r1.steps / r1.wall, rp.acc, o.procs, r1.acc);
    }
    if (o.min_acc > 0 && rp.acc < o.min_acc) {
        printf("test accuracy %.4f with %d processes is below --min-acc %.4f\n", rp.acc, o.procs,
               o.min_acc);
        return 1;
    }
    return 0;
}
