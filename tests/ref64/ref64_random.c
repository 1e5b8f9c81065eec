/* float64 references of the layers that draw random numbers in training: the core's dropout
 * and the autoencoder plugin's gaussian_noise, masking_noise and salt_pepper_noise (see
 * ref64.h, "Random layers in training").
 *
 * The draws. core/harness.c's px_layer_inst_forward seeds the node's stream afresh for every
 * forward with px_rng_seed_label(&rng, seed, "forward"); each forward here does the same with
 * the public px_rng API, so the reference draws the very numbers the kernel drew, provided it
 * draws them in the kernel's documented order:
 *   - dropout (core/layers.c): one px_rng_uniform per valid element, in row-major order over
 *     the whole tensor, example by example, the padded steps of a ragged input skipped (no
 *     draw); the element is dropped iff u < p, p as the layer stores it (a float).
 *   - noise layers (plugins/autoencoder): the same order (examples, their valid steps, the
 *     features of a step; padded steps draw nothing). gaussian: one px_rng_normal per element;
 *     masking and salt & pepper: one px_rng_uniform per element, a hit iff u < fraction
 *     (a double); salt & pepper then draws a second px_rng_uniform for a hit only: pepper
 *     (low) iff it is < 0.5, else salt (high), low and high as the layer stores them (floats).
 * Given the draws, every layer is linear in its input: the forward and backward below are
 * written from the definitions, per element. Padded steps: zero output, zero gradient. */
#include "ref64.h"

#include <stdlib.h>

#include <plexus/tensor.h>

/* opt: [0] kind, [1] seed, [2..5] the last forward's draws (valid, hit, high, changed);
 * fopt: [0] p / std / fraction, [1] low, [2] high, [3] the last forward's sum (y - x)^2 */
enum rnd_kind { RND_DROPOUT, RND_GAUSSIAN, RND_MASKING, RND_SALT_PEPPER };

struct rnd_cache {
	double *gain;   /* dy/dx per element of the last forward: 0 on padded steps */
};

/* the kernel's stream for one forward */
static void rnd_stream(const struct ref_layer *l, struct px_rng *r)
{
	px_rng_seed_label(r, (uint64_t)l->opt[1], "forward");
}

/* dropout: y = x m, m = 0 if u < p else 1/(1-p) (inverted dropout);
 * gaussian: y = x + std n; masking: y = u < fraction ? 0 : x;
 * salt & pepper: y = u < fraction ? (u2 < 0.5 ? low : high) : x */
static void rnd_fwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 **out)
{
	(void)n_in;
	const struct r64 *x = in[0];
	struct r64 *y = out[0] = r64_like(x);
	int64_t n = r64_numel(x), valid = 0, hit = 0, high = 0, changed = 0;
	struct rnd_cache *c = l->cache;
	free(c->gain);
	c->gain = calloc((size_t)(n ? n : 1), sizeof *c->gain);
	if (!c->gain)
		abort();
	struct px_rng r;
	rnd_stream(l, &r);
	double sq = 0, a = l->fopt[0];
	for (int64_t i = 0; i < n; i++) {
		if (!r64_valid(x, i))
			continue;   /* padded step: no draw, zero output */
		valid++;
		double u, g = 1, v;
		switch (l->opt[0]) {
		case RND_DROPOUT:
			u = px_rng_uniform(&r);
			g = u < a ? 0 : 1 / (1 - a);
			hit += u < a;
			v = g * x->d[i];
			break;
		case RND_GAUSSIAN:
			v = x->d[i] + a * px_rng_normal(&r);
			break;
		default:
			u = px_rng_uniform(&r);
			if (u >= a) {
				v = x->d[i];
				break;
			}
			hit++;
			g = 0;
			if (l->opt[0] == RND_MASKING) {
				v = 0;
			} else if (px_rng_uniform(&r) < 0.5) {
				v = l->fopt[1];
			} else {
				v = l->fopt[2];
				high++;
			}
			break;
		}
		y->d[i] = v;
		c->gain[i] = g;
		changed += v != x->d[i];
		sq += (v - x->d[i]) * (v - x->d[i]);
	}
	l->opt[2] = valid;
	l->opt[3] = hit;
	l->opt[4] = high;
	l->opt[5] = changed;
	l->fopt[3] = sq;
}

/* dx += dy * dy/dx: the dropout mask m, 1 (gaussian; kept elements), 0 (corrupted, padded) */
static void rnd_bwd(struct ref_layer *l, int n_in, struct r64 *const *in, struct r64 *const *out,
		    struct r64 *const *d_out, struct r64 **d_in)
{
	(void)n_in;
	(void)out;
	const struct rnd_cache *c = l->cache;
	if (!d_in[0])
		return;
	for (int64_t i = 0; i < r64_numel(in[0]); i++)
		d_in[0]->d[i] += d_out[0]->d[i] * c->gain[i];
}

static void rnd_cache_free(struct ref_layer *l)
{
	struct rnd_cache *c = l->cache;
	if (c)
		free(c->gain);
}

static void ref_random(struct ref_layer *l, const char *kind, enum rnd_kind k, uint64_t seed,
		       double a, double low, double high)
{
	l->kind = kind;
	l->n_out = 1;
	l->opt[0] = k;
	l->opt[1] = (int64_t)seed;
	l->fopt[0] = a;
	l->fopt[1] = low;
	l->fopt[2] = high;
	l->cache = calloc(1, sizeof(struct rnd_cache));
	if (!l->cache)
		abort();
	l->cache_free = rnd_cache_free;
	l->forward = rnd_fwd;
	l->backward = rnd_bwd;
}

void ref_dropout(struct ref_layer *l, double p, uint64_t seed)
{
	ref_random(l, "dropout", RND_DROPOUT, seed, (float)p, 0, 0);
}

void ref_gaussian_noise(struct ref_layer *l, double std, uint64_t seed)
{
	ref_random(l, "gaussian_noise", RND_GAUSSIAN, seed, std, 0, 0);
}

void ref_masking_noise(struct ref_layer *l, double fraction, uint64_t seed)
{
	ref_random(l, "masking_noise", RND_MASKING, seed, fraction, 0, 0);
}

void ref_salt_pepper_noise(struct ref_layer *l, double fraction, double low, double high,
			   uint64_t seed)
{
	ref_random(l, "salt_pepper_noise", RND_SALT_PEPPER, seed, fraction, (float)low,
		   (float)high);
}

void ref_random_draws(const struct ref_layer *l, struct ref_draws *d)
{
	d->valid = l->opt[2];
	d->hit = l->opt[3];
	d->high = l->opt[4];
	d->changed = l->opt[5];
	d->sq_change = l->fopt[3];
}
