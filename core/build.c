/* Declaring parameters while a layer is created. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct px_param *declare(struct px_build *b, const char *name, int ndim,
				const int64_t *shape, bool trainable, struct px_error *err)
{
	struct px_build_priv *p = b->priv;
	for (int i = 0; i < p->n_params; i++)
		if (!strcmp(p->params[i]->name, name)) {
			px_build_error(b, err, PX_ERR_INVALID, "parameter '%s' declared twice", name);
			return NULL;
		}
	if (p->n_params == p->cap_params) {
		int cap = p->cap_params ? 2 * p->cap_params : 16;
		struct px_param **np = realloc(p->params, (size_t)cap * sizeof *np);
		if (!np)
			goto nomem;
		p->params = np;
		p->cap_params = cap;
	}
	struct px_param *prm = px_arena_zalloc(p->arena, sizeof *prm);
	size_t len = strlen(name) + 1;
	char *nm = px_arena_alloc(p->arena, len);
	if (!prm || !nm)
		goto nomem;
	memcpy(nm, name, len);
	prm->name = nm;
	prm->trainable = trainable;
	prm->value = px_tensor_new(p->arena, ndim, shape);
	if (!prm->value) {
		px_build_error(b, err, PX_ERR_NOMEM, "parameter '%s': cannot allocate", name);
		return NULL;
	}
	if (trainable) {
		prm->grad = px_tensor_new(p->arena, ndim, shape);
		if (!prm->grad)
			goto nomem;
	}
	p->params[p->n_params++] = prm;
	return prm;
nomem:
	px_error_set(err, PX_ERR_NOMEM, "out of memory declaring parameter '%s'", name);
	return NULL;
}

struct px_param *px_build_param(struct px_build *b, const char *name, int ndim,
				const int64_t *shape, struct px_error *err)
{
	return declare(b, name, ndim, shape, true, err);
}

struct px_param *px_build_buffer(struct px_build *b, const char *name, int ndim,
				 const int64_t *shape, struct px_error *err)
{
	return declare(b, name, ndim, shape, false, err);
}

int px_build_error(struct px_build *b, struct px_error *err, int code, const char *fmt, ...)
{
	struct px_build_priv *p = b->priv;
	char body[PX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	return px_error_at(err, code, p->file, p->line, p->col, "%s: %s",
			   p->owner ? p->owner : b->node, body);
}

void px_build_priv_free(struct px_build_priv *p)
{
	free(p->params);
	p->params = NULL;
	p->n_params = p->cap_params = 0;
}

void px_init_uniform(struct px_tensor *t, struct px_rng *r, float bound)
{
	px_rng_fill_uniform(r, t->data, px_tensor_numel(t), -bound, bound);
}

void px_init_normal(struct px_tensor *t, struct px_rng *r, float std)
{
	int64_t n = px_tensor_numel(t);
	for (int64_t i = 0; i < n; i++)
		t->data[i] = (float)(std * px_rng_normal(r));
}

void px_init_fill(struct px_tensor *t, float value)
{
	int64_t n = px_tensor_numel(t);
	for (int64_t i = 0; i < n; i++)
		t->data[i] = value;
}
