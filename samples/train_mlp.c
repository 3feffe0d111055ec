/* SPDX-License-Identifier: MIT */
/* train_mlp — an MLP (64 -> 128 -> 10, ReLU, softmax cross-entropy, Adam or SGD with momentum)
 * trained on the digits data set (1797 8x8 images, stratified 80/20 split), every step a chain
 * of tandem maps over the mini-batch: linear, softmax_xent, the backward kernels and the
 * optimiser. Where each map runs is the scheduler's call (--policy), so the same program trains
 * on the CPU threads or a device. Prints loss and accuracy per epoch with a progress bar and the
 * test set's confusion matrix.
 *
 *   sample_train_mlp [--data digits.csv.gz] [--epochs 40] [--batch 32] [--lr 0.003]
 *                    [--optimizer adam|sgd] [--seed 0] [--policy auto|cpu|opencl|gpu]
 *                    [--min-acc 0.965] [--quiet]
 *
 * Exit code: 0; 1 when a tandem call fails or the test accuracy is below --min-acc; 2 usage. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <tandem.h>

#ifndef TDM_SAMPLE_DATA_DIR /* set by samples/CMakeLists.txt: the source tree's tests/data */
#define TDM_SAMPLE_DATA_DIR "tests/data"
#endif

enum { F = 64, H = 128, C = 10, MAX_ROWS = 2000 };

static tdm_runtime *rt;

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s failed: %s: %s\n", #call, tdm_status_name(rc_), tdm_errmsg(rt));   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t rng_state;
static double uniform(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

static void shuffle(int *v, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(uniform() * (i + 1)), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static tdm_tensor *tensor(tdm_dtype dt, int nd, int64_t d0, int64_t d1)
{
    tdm_tensor *t;
    int64_t shape[2] = {d0, d1};
    CHECK(tdm_tensor_zeros(rt, dt, nd, shape, TDM_MEM_HOST, &t));
    return t;
}

/* One layer's parameters and optimiser state. */
typedef struct {
    tdm_tensor *W, *b, *dW, *db, *mW, *vW, *mb, *vb;
} layer;

static void layer_init(layer *l, int in, int out)
{
    l->W = tensor(TDM_F32, 2, in, out);
    l->b = tensor(TDM_F32, 1, out, 0);
    l->dW = tensor(TDM_F32, 2, in, out);
    l->db = tensor(TDM_F32, 1, out, 0);
    l->mW = tensor(TDM_F32, 2, in, out);
    l->vW = tensor(TDM_F32, 2, in, out);
    l->mb = tensor(TDM_F32, 1, out, 0);
    l->vb = tensor(TDM_F32, 1, out, 0);
    float *w = tdm_tensor_data(l->W);
    double scale = sqrt(6.0 / (in + out)); /* Glorot uniform, as scikit-learn's MLP */
    for (int i = 0; i < in * out; i++)
        w[i] = (float)((2 * uniform() - 1) * scale);
}

static void layer_free(layer *l)
{
    tdm_tensor *t[] = {l->W, l->b, l->dW, l->db, l->mW, l->vW, l->mb, l->vb};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        tdm_tensor_release(t[i]);
}

typedef struct {
    const char *data, *optimizer, *policy;
    int epochs, batch, quiet;
    double lr, min_acc;
    uint64_t seed;
} options;

static tdm_map_opts mopts;

static void update(const options *o, tdm_tensor *g, tdm_tensor *w, tdm_tensor *m, tdm_tensor *v,
                   int step)
{
    if (!strcmp(o->optimizer, "adam")) {
        tdm_adam_params p = {(float)o->lr, 0.9f, 0.999f, 1e-8f, 1e-4f, step};
        tdm_tensor *in[4] = {g, w, m, v}, *out[3] = {w, m, v};
        CHECK(tdm_map(rt, "adam", in, 4, out, 3, &p, sizeof p, &mopts, NULL));
    } else {
        tdm_sgd_params p = {(float)o->lr, 0.9f, 1e-4f, 0};
        tdm_tensor *in[3] = {g, w, m}, *out[2] = {w, m};
        CHECK(tdm_map(rt, "sgd_momentum", in, 3, out, 2, &p, sizeof p, &mopts, NULL));
    }
}

/* Forward pass of rows x [n, F]: hidden h [n, H], logits z [n, C]. */
static void forward(layer *l1, layer *l2, tdm_tensor *x, tdm_tensor *h, tdm_tensor *z)
{
    tdm_linear_params relu = {1, 0}, plain = {0, 0};
    tdm_tensor *in1[3] = {x, l1->W, l1->b}, *in2[3] = {h, l2->W, l2->b};
    CHECK(tdm_map(rt, "linear", in1, 3, &h, 1, &relu, sizeof relu, &mopts, NULL));
    CHECK(tdm_map(rt, "linear", in2, 3, &z, 1, &plain, sizeof plain, &mopts, NULL));
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){TDM_SAMPLE_DATA_DIR "/digits.csv.gz", "adam", "auto", 40, 32, 0, 3e-3, 0, 0};
    /* The data: --data FILE, else $TDM_DATA_DIR/digits.csv.gz, else the copy in the source
     * tree (tests/data, the build's default). */
    const char *env = getenv("TDM_DATA_DIR");
    static char path[4096];
    if (env && *env) {
        snprintf(path, sizeof path, "%s/digits.csv.gz", env);
        o->data = path;
    }
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
        else if (!strcmp(a, "--epochs"))
            o->epochs = atoi(v);
        else if (!strcmp(a, "--batch"))
            o->batch = atoi(v);
        else if (!strcmp(a, "--lr"))
            o->lr = atof(v);
        else if (!strcmp(a, "--optimizer"))
            o->optimizer = v;
        else if (!strcmp(a, "--seed"))
            o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--policy"))
            o->policy = v;
        else if (!strcmp(a, "--min-acc"))
            o->min_acc = atof(v);
        else
            return -1;
    }
    if (o->epochs < 1 || o->batch < 1 || o->batch > MAX_ROWS || !(o->lr > 0) ||
        (strcmp(o->optimizer, "adam") && strcmp(o->optimizer, "sgd")))
        return -1;
    mopts = (tdm_map_opts)TDM_MAP_OPTS_INIT;
    mopts.progress = TDM_PROGRESS_OFF;
    if (!strcmp(o->policy, "auto"))
        mopts.policy = TDM_POLICY_AUTO;
    else if (!strcmp(o->policy, "cpu"))
        mopts.policy = TDM_POLICY_CPU;
    else if (!strcmp(o->policy, "opencl"))
        mopts.policy = TDM_POLICY_OPENCL;
    else if (!strcmp(o->policy, "gpu"))
        mopts.policy = TDM_POLICY_GPU;
    else
        return -1;
    return 0;
}

/* digits.csv.gz: 64 features (0..16) then the label, one sample a line. */
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

int main(int argc, char **argv)
{
    options o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: sample_train_mlp [--data FILE] [--epochs N] [--batch N] [--lr X] "
                        "[--optimizer adam|sgd] [--seed S] [--policy auto|cpu|opencl|gpu] "
                        "[--min-acc X] [--quiet]\n");
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
    /* stratified split: 20% of each class to the test set */
    static int train[MAX_ROWS], test[MAX_ROWS];
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
                test[n_test++] = idx[i];
            else
                train[n_train++] = idx[i];
        }
    }

    tdm_config cfg = TDM_CONFIG_INIT;
    CHECK(tdm_runtime_open(&rt, &cfg));
    layer l1, l2;
    layer_init(&l1, F, H);
    layer_init(&l2, H, C);
    int B = o.batch, NT = n_test;
    tdm_tensor *xb = tensor(TDM_F32, 2, B, F), *yb = tensor(TDM_I32, 1, B, 0);
    tdm_tensor *h = tensor(TDM_F32, 2, B, H), *z = tensor(TDM_F32, 2, B, C);
    tdm_tensor *dz = tensor(TDM_F32, 2, B, C), *loss = tensor(TDM_F32, 1, B, 0),
               *pred = tensor(TDM_I32, 1, B, 0), *dh = tensor(TDM_F32, 2, B, H);
    tdm_tensor *xt = tensor(TDM_F32, 2, NT, F), *yt = tensor(TDM_I32, 1, NT, 0);
    tdm_tensor *ht = tensor(TDM_F32, 2, NT, H), *zt = tensor(TDM_F32, 2, NT, C);
    tdm_tensor *dzt = tensor(TDM_F32, 2, NT, C), *losst = tensor(TDM_F32, 1, NT, 0),
               *predt = tensor(TDM_I32, 1, NT, 0);
    for (int i = 0; i < NT; i++) {
        memcpy((float *)tdm_tensor_data(xt) + (int64_t)i * F, X + (int64_t)test[i] * F,
               F * sizeof(float));
        ((int32_t *)tdm_tensor_data(yt))[i] = Y[test[i]];
    }
    printf("digits: %d samples, %d train / %d test (stratified), MLP %d-%d-%d, %s lr %g, batch %d, "
           "policy %s\n",
           n, n_train, n_test, F, H, C, o.optimizer, o.lr, B, o.policy);
    int step = 0, steps = (n_train + B - 1) / B;
    double acc = 0, t0 = (double)clock();
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    int tty = !o.quiet && isatty(2);
    for (int e = 1; e <= o.epochs; e++) {
        shuffle(train, n_train);
        double sum_loss = 0;
        int correct = 0;
        for (int s = 0; s < steps; s++) {
            int rows = n_train - s * B < B ? n_train - s * B : B;
            float *xp = tdm_tensor_data(xb);
            int32_t *yp = tdm_tensor_data(yb);
            for (int r = 0; r < rows; r++) {
                memcpy(xp + (int64_t)r * F, X + (int64_t)train[s * B + r] * F, F * sizeof(float));
                yp[r] = Y[train[s * B + r]];
            }
            for (int r = rows; r < B; r++) { /* a short last batch: repeat its rows, weight 0 */
                memcpy(xp + (int64_t)r * F, xp, F * sizeof(float));
                yp[r] = -1;
            }
            forward(&l1, &l2, xb, h, z);
            tdm_softmax_xent_params xs = {1.0f / (float)rows, 0};
            tdm_tensor *xin[2] = {z, yb}, *xout[3] = {dz, loss, pred};
            CHECK(tdm_map(rt, "softmax_xent", xin, 2, xout, 3, &xs, sizeof xs, &mopts, NULL));
            float *dzp = tdm_tensor_data(dz);
            const float *lp = tdm_tensor_data(loss);
            const int32_t *pp = tdm_tensor_data(pred);
            for (int r = 0; r < B; r++) {
                if (r >= rows) { /* padding rows carry no gradient */
                    memset(dzp + (int64_t)r * C, 0, C * sizeof(float));
                    continue;
                }
                sum_loss += lp[r];
                correct += pp[r] == yp[r];
            }
            /* backward */
            tdm_tensor *gw2[2] = {h, dz}, *gx[3] = {dz, l2.W, h}, *gw1[2] = {xb, dh};
            CHECK(tdm_map(rt, "linear_grad_w", gw2, 2, &l2.dW, 1, NULL, 0, &mopts, NULL));
            CHECK(tdm_map(rt, "colsum", &dz, 1, &l2.db, 1, NULL, 0, &mopts, NULL));
            CHECK(tdm_map(rt, "linear_grad_x", gx, 3, &dh, 1, NULL, 0, &mopts, NULL));
            CHECK(tdm_map(rt, "linear_grad_w", gw1, 2, &l1.dW, 1, NULL, 0, &mopts, NULL));
            CHECK(tdm_map(rt, "colsum", &dh, 1, &l1.db, 1, NULL, 0, &mopts, NULL));
            step++;
            update(&o, l1.dW, l1.W, l1.mW, l1.vW, step);
            update(&o, l1.db, l1.b, l1.mb, l1.vb, step);
            update(&o, l2.dW, l2.W, l2.mW, l2.vW, step);
            update(&o, l2.db, l2.b, l2.mb, l2.vb, step);
            if (tty) {
                int w = 30, fill = (s + 1) * w / steps;
                fprintf(stderr, "\repoch %3d/%d [%.*s%*s] %d/%d", e, o.epochs, fill,
                        "==============================", w - fill, "", s + 1, steps);
            }
        }
        /* test accuracy: one forward over the whole test set */
        forward(&l1, &l2, xt, ht, zt);
        tdm_softmax_xent_params xs = {1.0f, 0};
        tdm_tensor *tin[2] = {zt, yt}, *tout[3] = {dzt, losst, predt};
        CHECK(tdm_map(rt, "softmax_xent", tin, 2, tout, 3, &xs, sizeof xs, &mopts, NULL));
        const int32_t *pt = tdm_tensor_data(predt), *ytp = tdm_tensor_data(yt);
        int ok = 0;
        for (int i = 0; i < NT; i++)
            ok += pt[i] == ytp[i];
        acc = (double)ok / NT;
        if (tty)
            fprintf(stderr, "\r%*s\r", 60, "");
        if (!o.quiet || e == o.epochs)
            printf("epoch %3d/%d  loss %.4f  train acc %.4f  test acc %.4f\n", e, o.epochs,
                   sum_loss / n_train, (double)correct / n_train, acc);
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);
    double wall = (double)(w1.tv_sec - w0.tv_sec) + 1e-9 * (double)(w1.tv_nsec - w0.tv_nsec);
    printf("%d steps in %.2f s: %.0f steps/s (%.0f samples/s), %.2f s CPU\n", step, wall,
           step / wall, step * (double)B / wall, ((double)clock() - t0) / CLOCKS_PER_SEC);
    printf("test accuracy %.4f; confusion matrix (rows: true digit, columns: predicted):\n", acc);
    const int32_t *pt = tdm_tensor_data(predt), *ytp = tdm_tensor_data(yt);
    int cm[C][C] = {{0}};
    for (int i = 0; i < NT; i++)
        cm[ytp[i]][pt[i] >= 0 && pt[i] < C ? pt[i] : 0]++;
    printf("     ");
    for (int c = 0; c < C; c++)
        printf("%4d", c);
    printf("\n");
    for (int r = 0; r < C; r++) {
        printf("  %d: ", r);
        for (int c = 0; c < C; c++)
            printf("%4d", cm[r][c]);
        printf("\n");
    }
    tdm_tensor *all[] = {xb, yb, h, z, dz, loss, pred, dh, xt, yt, ht, zt, dzt, losst, predt};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tdm_tensor_release(all[i]);
    layer_free(&l1);
    layer_free(&l2);
    CHECK(tdm_runtime_close(rt));
    if (o.min_acc > 0 && acc < o.min_acc) {
        printf("test accuracy %.4f is below --min-acc %.4f\n", acc, o.min_acc);
        return 1;
    }
    return 0;
}
