/* plexus-bench-recurrent: the recurrent workloads of ../shared/bench/torch_anchor.py, timed the
 * same way (3 warm-up steps, then the mean of 20), beside the OpenBLAS sgemm peak measured in
 * the same run.
 *
 *   plexus-bench-recurrent [-t THREADS] [-p PLUGIN_ROOT] [-s STEPS] [FILTER]
 *
 * Besides wall time it prints the CPU time of all threads per step (on a busy machine, with one
 * thread, the better guide). PLUGIN_ROOT holds <name>/px-<name>.so (default: $PLEXUS_BUILD/plugins, else the plugins
 * folder next to this program's folder in the build tree). A training step is forward, a
 * linear head on the last step with cross-entropy, backward and an SGD update (lr 0.01). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dlfcn.h>

#include <plexus/harness.h>
#include <plexus/plugin.h>

static char plugin_root[PATH_MAX];

static const struct px_host host = {
	.struct_size = sizeof(struct px_host),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.version = "bench",
};

static const struct px_layer_ops *load_layer(const char *kind)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s/px-%s.so", plugin_root, kind, kind);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
		return NULL;
	}
	const struct px_plugin *(*entry)(const struct px_host *);
	*(void **)&entry = dlsym(h, "px_plugin_entry");
	const struct px_plugin *p = entry ? entry(&host) : NULL;
	for (const struct px_layer_ops *const *l = p ? p->layers : NULL; l && *l; l++)
		if (!strcmp((*l)->kind, kind))
			return *l;
	fprintf(stderr, "%s: no layer kind '%s'\n", path, kind);
	return NULL;
}

static double clock_s(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

/* CPU time of all threads: on a busy machine, with one thread, a better guide than wall time */
static double cpu_now(void)
{
	return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* GFLOP/s of C = A B for 1024x1024 matrices, as numpy's a @ b in torch_anchor.py */
static double sgemm_peak(void)
{
	int64_t n = 1024;
	float *a = malloc(sizeof(float) * (size_t)(n * n)), *b = malloc(sizeof(float) * (size_t)(n * n));
	float *c = malloc(sizeof(float) * (size_t)(n * n));
	if (!a || !b || !c) {
		free(a);
		free(b);
		free(c);
		return 0;
	}
	for (int64_t i = 0; i < n * n; i++) {
		a[i] = (float)rand() / (float)RAND_MAX;
		b[i] = (float)rand() / (float)RAND_MAX;
	}
	px_gemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
	double t = now();
	for (int r = 0; r < 20; r++)
		px_gemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
	double dt = now() - t;
	free(a);
	free(b);
	free(c);
	return 2.0 * (double)(n * n * n) * 20 / dt / 1e9;
}

struct workload {
	const char *name;     /* as torch_anchor.py prints it */
	const char *kind;
	const char *options;
	bool train;
	int gates;            /* for the FLOP count */
};

enum { B = 32, T = 64, IN = 128, H = 256, CLASSES = 10 };

/* logits = seq[:, T-1] W^T + b; cross-entropy against y; fills dseq[:, T-1] and updates W, b
 * by SGD after computing their gradients. Returns the loss. */
static double head_step(const float *seq, int64_t dh, const int *y, float *w, float *bias,
			float *dw, float *db, float *dseq, float lr)
{
	float logits[B * CLASSES], last[B * 2 * H];
	for (int b = 0; b < B; b++)
		memcpy(last + b * dh, seq + ((int64_t)b * T + T - 1) * dh, sizeof(float) * (size_t)dh);
	for (int b = 0; b < B; b++)
		memcpy(logits + b * CLASSES, bias, sizeof bias[0] * CLASSES);
	px_gemm(false, true, B, CLASSES, dh, 1.0f, last, dh, w, dh, 1.0f, logits, CLASSES);
	double loss = 0;
	for (int b = 0; b < B; b++) {  /* dlogits = (softmax - onehot) / B */
		float *l = logits + b * CLASSES, m = l[0], s = 0;
		for (int k = 1; k < CLASSES; k++)
			m = l[k] > m ? l[k] : m;
		for (int k = 0; k < CLASSES; k++)
			s += (l[k] = expf(l[k] - m));
		loss -= log(l[y[b]] / s);
		for (int k = 0; k < CLASSES; k++)
			l[k] = (l[k] / s - (k == y[b])) / B;
	}
	memset(db, 0, sizeof db[0] * CLASSES);
	for (int b = 0; b < B; b++)
		for (int k = 0; k < CLASSES; k++)
			db[k] += logits[b * CLASSES + k];
	px_gemm(true, false, CLASSES, dh, B, 1.0f, logits, CLASSES, last, dh, 0.0f, dw, dh);
	for (int b = 0; b < B; b++)
		px_gemm(false, false, 1, dh, CLASSES, 1.0f, logits + b * CLASSES, CLASSES, w, dh, 0.0f,
			dseq + ((int64_t)b * T + T - 1) * dh, dh);
	px_axpy(CLASSES * dh, -lr, dw, w);
	px_axpy(CLASSES, -lr, db, bias);
	return loss / B;
}

static int run(const struct workload *wl, int steps)
{
	const struct px_layer_ops *ops = load_layer(wl->kind);
	if (!ops)
		return 1;
	struct px_shape in = {3, {B, T, IN}};
	struct px_layer_inst *li;
	struct px_error err;
	if (px_layer_inst_new(ops, wl->options, 1, &in, NULL, 1, &host, &li, &err)) {
		fprintf(stderr, "%s: %s\n", wl->name, err.msg);
		return 1;
	}
	int64_t shp[3] = {B, T, IN};
	struct px_tensor *x = px_layer_inst_tensor(li, 3, shp);
	struct px_rng rng;
	px_rng_seed(&rng, 1);
	for (int64_t i = 0; i < px_tensor_numel(x); i++)
		x->data[i] = (float)px_rng_normal(&rng);
	int y[B];
	for (int b = 0; b < B; b++)
		y[b] = (int)px_rng_below(&rng, CLASSES);
	const struct px_tensor *const ins[1] = {x};
	int64_t dh = 0;
	int64_t seq_shape[3] = {B, T, 0};
	struct px_tensor *dseq = NULL;
	float w[CLASSES * 2 * H], bias[CLASSES], dw[CLASSES * 2 * H], db[CLASSES];
	int np = px_layer_inst_n_params(li);
	double t0 = 0, c0 = 0, loss = 0;
	for (int s = 0; s < steps + 3; s++) {
		if (s == 3) {
			t0 = now();
			c0 = cpu_now();
		}
		if (px_layer_inst_forward(li, ins, wl->train, &err)) {
			fprintf(stderr, "%s: %s\n", wl->name, err.msg);
			px_layer_inst_free(li);
			return 1;
		}
		if (!wl->train)
			continue;
		const struct px_tensor *seq = px_layer_inst_out(li, 1);
		if (!dseq) {  /* first step: the head and the gradient buffer */
			dh = seq->shape[2];
			seq_shape[2] = dh;
			dseq = px_layer_inst_tensor(li, 3, seq_shape);
			float bound = 1.0f / sqrtf((float)dh);
			px_rng_fill_uniform(&rng, w, CLASSES * dh, -bound, bound);
			px_rng_fill_uniform(&rng, bias, CLASSES, -bound, bound);
		}
		loss = head_step(seq->data, dh, y, w, bias, dw, db, dseq->data, 0.01f);
		const struct px_tensor *d_out[4] = {NULL, dseq, NULL, NULL};
		if (px_layer_inst_backward(li, d_out, NULL, &err)) {
			fprintf(stderr, "%s: %s\n", wl->name, err.msg);
			px_layer_inst_free(li);
			return 1;
		}
		for (int i = 0; i < np; i++) {  /* SGD */
			struct px_param *p = px_layer_inst_param(li, i);
			px_axpy(px_tensor_numel(p->value), -0.01f, p->grad->data, p->value->data);
		}
	}
	double dt = (now() - t0) / steps, cpu = (cpu_now() - c0) / steps;
	char gf[32] = "-";
	if (wl->gates) {
		double flops = (wl->train ? 3.0 : 1.0) * 2 * B * T * wl->gates * (double)H * (IN + H);
		snprintf(gf, sizeof gf, "%.1f GFLOP/s", flops / dt / 1e9);
	}
	printf("%s\t%.2f ms/step\t%.0f items/s\t%s", wl->name, dt * 1e3, B * T / dt, gf);
	printf("\tcpu %.2f ms/step", cpu * 1e3);
	if (wl->train)
		printf("\tloss %.3f", loss);
	printf("\n");
	fflush(stdout);
	px_layer_inst_free(li);
	return 0;
}

static const struct workload workloads[] = {
	{"rnn B32 T64 I128 H256 train", "rnn", "hidden: 256", true, 1},
	{"lstm B32 T64 I128 H256 train", "lstm", "hidden: 256", true, 4},
	{"gru B32 T64 I128 H256 train", "gru", "hidden: 256", true, 3},
	{"bilstm2 B32 T64 I128 H256 train", "lstm", "hidden: 256, layers: 2, bidirectional: true",
	 true, 0},
	{"lstm B32 T64 I128 H256 infer", "lstm", "hidden: 256", false, 4},
	{"rnn B32 T64 I128 H256 infer", "rnn", "hidden: 256", false, 1},
	{"gru B32 T64 I128 H256 infer", "gru", "hidden: 256", false, 3},
};

/* the build tree's plugins folder: <dir of this program>/../plugins */
static void default_plugin_root(void)
{
	const char *b = getenv("PLEXUS_BUILD");
	if (b) {
		snprintf(plugin_root, sizeof plugin_root, "%s/plugins", b);
		return;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0) {
		snprintf(plugin_root, sizeof plugin_root, "build/plugins");
		return;
	}
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	snprintf(plugin_root, sizeof plugin_root, "%s/../plugins", exe);
}

int main(int argc, char **argv)
{
	int threads = 2, steps = 20, opt;
	default_plugin_root();
	while ((opt = getopt(argc, argv, "t:p:s:h")) != -1) {
		switch (opt) {
		case 't':
			threads = atoi(optarg);
			break;
		case 'p':
			snprintf(plugin_root, sizeof plugin_root, "%s", optarg);
			break;
		case 's':
			steps = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-t threads] [-p plugin_root] [-s steps] [filter]\n",
				argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	const char *filter = optind < argc ? argv[optind] : "";
	if (steps < 1)
		steps = 1;
	px_set_threads(threads);
	printf("openblas sgemm n=1024 peak\t%.1f GFLOP/s\t(threads=%d)\n", sgemm_peak(), threads);
	int rc = 0;
	for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++)
		if (strstr(workloads[i].name, filter))
			rc |= run(&workloads[i], steps);
	return rc;
}
