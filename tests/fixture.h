/* Reader for the golden-value fixtures under tests/fixtures/ (written by fixture_io.py from
 * PyTorch). Text format, one tensor per two lines:
 *     tensor NAME NDIM D0 D1 ...
 *     v0 v1 v2 ...            (numel values, %.9g)
 * Lines starting with '#' are comments. Header-only, for tests. */
#ifndef PX_TEST_FIXTURE_H
#define PX_TEST_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture_tensor {
	char name[128];
	int ndim;
	int64_t shape[6];
	int64_t numel;
	float *data;
};

struct fixture {
	int n;
	struct fixture_tensor t[256];
};

/* Loads tests/fixtures/<rel>; returns NULL (and prints why) on failure. */
static inline struct fixture *fixture_load(const char *rel)
{
	char path[1024];
	const char *src = getenv("PLEXUS_SRC");
	snprintf(path, sizeof path, "%s/tests/fixtures/%s", src ? src : ".", rel);
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "fixture %s: cannot open\n", path);
		return NULL;
	}
	struct fixture *fx = calloc(1, sizeof *fx);
	char word[64];
	while (fx && fscanf(f, "%63s", word) == 1) {
		if (word[0] == '#') {
			int c;
			while ((c = fgetc(f)) != '\n' && c != EOF)
				;
			continue;
		}
		if (strcmp(word, "tensor") || fx->n >= 256)
			goto bad;
		struct fixture_tensor *t = &fx->t[fx->n];
		if (fscanf(f, "%127s %d", t->name, &t->ndim) != 2 || t->ndim < 0 || t->ndim > 6)
			goto bad;
		t->numel = 1;
		for (int i = 0; i < t->ndim; i++) {
			long long d;
			if (fscanf(f, "%lld", &d) != 1 || d < 0)
				goto bad;
			t->shape[i] = d;
			t->numel *= d;
		}
		t->data = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
		for (int64_t i = 0; i < t->numel; i++)
			if (fscanf(f, "%f", &t->data[i]) != 1)
				goto bad;
		fx->n++;
	}
	fclose(f);
	return fx;
bad:
	fprintf(stderr, "fixture %s: malformed near tensor %d\n", path, fx ? fx->n : -1);
	fclose(f);
	return NULL;
}

/* The tensor called `name`, or NULL. */
static inline struct fixture_tensor *fixture_get(struct fixture *fx, const char *name)
{
	for (int i = 0; fx && i < fx->n; i++)
		if (!strcmp(fx->t[i].name, name))
			return &fx->t[i];
	fprintf(stderr, "fixture: no tensor '%s'\n", name);
	return NULL;
}

static inline void fixture_free(struct fixture *fx)
{
	for (int i = 0; fx && i < fx->n; i++)
		free(fx->t[i].data);
	free(fx);
}

/* max |a - b| over n floats */
static inline double fixture_max_abs_diff(const float *a, const float *b, int64_t n)
{
	double m = 0;
	for (int64_t i = 0; i < n; i++) {
		double d = a[i] - b[i];
		if (d < 0)
			d = -d;
		if (d > m || d != d)
			m = d != d ? 1e30 : d;
	}
	return m;
}

#endif
