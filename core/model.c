/* The model: a graph of layer instances in file order, wired by name; forward in order,
 * backward in reverse with fan-out gradients summed into one buffer per output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define UNCONNECTED -2

static int n_ports(const struct px_port_spec *p)
{
	int n = 0;
	while (p && p[n].name)
		n++;
	return n;
}

static int port_index(const struct px_port_spec *p, const char *name)
{
	for (int i = 0; p && p[i].name; i++)
		if (!strcmp(p[i].name, name))
			return i;
	return -1;
}

static void port_list(const struct px_port_spec *p, char *buf, size_t n)
{
	size_t u = 0;
	buf[0] = 0;
	for (int i = 0; p && p[i].name && u < n; i++)
		u += (size_t)snprintf(buf + u, n - u, "%s%s", i ? ", " : "", p[i].name);
}

int px_model_resolve(const struct px_model *m, const char *ref, int before, struct px_src *out,
		     struct px_error *err)
{
	if (!strcmp(ref, "input")) {
		*out = (struct px_src){-1, 0};
		return 0;
	}
	if (!strcmp(ref, "label")) {
		*out = (struct px_src){-1, 1};
		return 0;
	}
	const char *dot = strchr(ref, '.');
	size_t nl = dot ? (size_t)(dot - ref) : strlen(ref);
	for (int i = 0; i < m->pl->n_nodes; i++) {
		const char *nm = m->pl->nodes[i].name;
		if (strlen(nm) != nl || strncmp(nm, ref, nl))
			continue;
		if (i >= before)
			return px_error_set(err, PX_ERR_INVALID,
					    "'%s' is not defined before this node (nodes may only use earlier nodes)",
					    ref);
		int port = 0;
		if (dot) {
			port = port_index(m->nodes[i].ops->outputs, dot + 1);
			if (port < 0) {
				char ports[256];
				port_list(m->nodes[i].ops->outputs, ports, sizeof ports);
				return px_error_set(err, PX_ERR_INVALID,
						    "node '%s' (%s) has no output '%s' (outputs: %s)",
						    nm, m->nodes[i].ops->kind, dot + 1, ports);
			}
		}
		*out = (struct px_src){i, port};
		return 0;
	}
	return px_error_set(err, PX_ERR_INVALID, "no node named '%.*s' (use a node name, "
			    "node.port, input or label)", (int)nl, ref);
}

static const struct px_shape *src_shape(const struct px_model *m, struct px_src s, bool *ragged)
{
	if (s.node == -1) {
		*ragged = s.port == 0 ? m->data.x_ragged : m->data.y_ragged;
		return s.port == 0 ? &m->data.x : &m->data.y;
	}
	const struct px_node *n = &m->nodes[s.node];
	/* ragged-ness travels with sequences: assume outputs of rank 3 may carry lengths when
	 * any input did */
	bool r = false;
	for (int i = 0; i < n->n_in; i++) {
		bool ri = false;
		if (n->in[i].node != UNCONNECTED)
			src_shape(m, n->in[i], &ri);
		r |= ri;
	}
	*ragged = r;
	return &n->out_shape[s.port];
}

static bool skip_ports(const char *key, void *ctx)
{
	return port_index(ctx, key) >= 0;
}

/* Wire node i's input slots from its spec. */
static int wire(struct px_model *m, int i, struct px_error *err)
{
	struct px_node *n = &m->nodes[i];
	const struct px_node_spec *ns = n->spec;
	const struct px_port_spec *ports = n->ops->inputs;
	int np = n_ports(ports);
	bool variadic = np && (ports[np - 1].flags & PX_PORT_VARIADIC);
	for (int k = 0; k < PX_MAX_PORTS; k++)
		n->in[k].node = UNCONNECTED;
	int slots = np;
	/* positional refs */
	int pos = 0;
	for (int r = 0; r < ns->n_inputs && r < PX_MAX_PORTS; r++) {
		const struct px_input_ref *ref = &ns->inputs[r];
		if (pos >= np && !variadic)
			return px_error_at(err, PX_ERR_INVALID, m->pl->file, ref->line, ref->col,
					   "%s: takes %d input%s, got more", n->owner, np, np == 1 ? "" : "s");
		if (pos >= PX_MAX_PORTS)
			return px_error_at(err, PX_ERR_INVALID, m->pl->file, ref->line, ref->col,
					   "%s: too many inputs", n->owner);
		int rc = px_model_resolve(m, ref->ref, i, &n->in[pos], err);
		if (rc)
			return px_error_at(err, rc, m->pl->file, ref->line, ref->col, "%s: %s", n->owner,
					   err->msg);
		pos++;
	}
	if (pos > slots)
		slots = pos;
	/* ports named as keys */
	for (int o = 0; o < ns->opts.n; o++) {
		const struct px_raw_opt *ro = &ns->opts.opts[o];
		int p = port_index(ports, ro->key);
		if (p < 0)
			continue;
		if (ro->is_list || ro->n != 1)
			return px_error_at(err, PX_ERR_INVALID, m->pl->file, ro->line, ro->col,
					   "%s: port '%s' takes one node name", n->owner, ro->key);
		if (n->in[p].node != UNCONNECTED)
			return px_error_at(err, PX_ERR_INVALID, m->pl->file, ro->line, ro->col,
					   "%s: port '%s' is connected twice", n->owner, ro->key);
		int rc = px_model_resolve(m, ro->texts[0], i, &n->in[p], err);
		if (rc)
			return px_error_at(err, rc, m->pl->file, ro->line, ro->col, "%s: %s", n->owner,
					   err->msg);
	}
	/* default: the previous node's default output, or the data */
	if (n->in[0].node == UNCONNECTED && ns->n_inputs == 0)
		n->in[0] = i == 0 ? (struct px_src){-1, 0} : (struct px_src){i - 1, 0};
	for (int p = 0; p < np; p++)
		if (n->in[p].node == UNCONNECTED && !(ports[p].flags & (PX_PORT_OPTIONAL | PX_PORT_VARIADIC)))
			return px_error_at(err, PX_ERR_INVALID, m->pl->file, ns->line, ns->col,
					   "%s: input port '%s' is not connected", n->owner, ports[p].name);
	/* a variadic port with nothing is unconnected: drop trailing empty slots */
	while (slots > 1 && n->in[slots - 1].node == UNCONNECTED &&
	       (ports[np - 1].flags & PX_PORT_VARIADIC))
		slots--;
	n->n_in = slots;
	return 0;
}

static int add_params(struct px_model *m, struct px_node *n, struct px_build_priv *bp,
		      struct px_error *err)
{
	int total = m->n_params + bp->n_params;
	struct px_param **np = realloc(m->params, (size_t)(total ? total : 1) * sizeof *np);
	char **nn = np ? realloc(m->param_names, (size_t)(total ? total : 1) * sizeof *nn) : NULL;
	if (np)
		m->params = np;
	if (!np || !nn)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	m->param_names = nn;
	n->param_begin = m->n_params;
	n->n_params = bp->n_params;
	for (int k = 0; k < bp->n_params; k++) {
		m->params[m->n_params] = bp->params[k];
		m->param_names[m->n_params] = px_asprintf("%s.%s", n->name, bp->params[k]->name);
		if (!m->param_names[m->n_params])
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		m->n_params++;
	}
	return 0;
}

int px_model_build(struct px_registry *reg, const struct px_pipeline *pl,
		   const struct px_data_info *data, uint64_t seed, struct px_model **out,
		   struct px_error *err)
{
	*out = NULL;
	struct px_model *m = calloc(1, sizeof *m);
	if (!m)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	m->reg = reg;
	m->pl = pl;
	m->data = *data;
	m->seed = seed;
	m->nodes = calloc((size_t)pl->n_nodes, sizeof *m->nodes);
	m->param_arena = px_arena_new(1 << 20);
	m->step_arena = px_arena_new(8 << 20);
	int rc = 0;
	if (!m->nodes || !m->param_arena || !m->step_arena) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	m->n_nodes = pl->n_nodes;
	for (int i = 0; i < pl->n_nodes; i++) {
		struct px_node *n = &m->nodes[i];
		const struct px_node_spec *ns = &pl->nodes[i];
		n->spec = ns;
		n->name = ns->name;
		struct px_error e;
		n->entry = px_registry_find(reg, PX_E_LAYER, ns->kind, ns->impl, &e);
		if (!n->entry) {
			rc = px_error_at(err, e.code ? e.code : PX_ERR_NOTFOUND, pl->file, ns->line, ns->col,
					 "node '%s': %s", ns->name, e.msg);
			goto fail;
		}
		n->ops = n->entry->ops;
		n->rng_salt = px_hash64(ns->name, strlen(ns->name), 0x5eed);
		n->owner = px_asprintf("node '%s' (%s)", ns->name, ns->kind);
		if (!n->owner) {
			rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
			goto fail;
		}
		if ((rc = wire(m, i, err)))
			goto fail;
		int np = n_ports(n->ops->inputs);
		for (int k = 0; k < n->n_in; k++)
			n->label_needed |= n->in[k].node == -1 && n->in[k].port == 1 &&
					   !(n->ops->inputs[k < np ? k : np - 1].flags & PX_PORT_OPTIONAL);
		rc = px_config_from_raw(n->ops->schema, &ns->opts, pl->file, n->owner, skip_ports,
					(void *)n->ops->inputs, &data->vars, &n->cfg, err);
		if (rc)
			goto fail;
		bool ragged[PX_MAX_PORTS] = {0};
		for (int k = 0; k < n->n_in; k++) {
			if (n->in[k].node == UNCONNECTED) {
				memset(&n->in_shape[k], 0, sizeof n->in_shape[k]);
				continue;
			}
			n->in_shape[k] = *src_shape(m, n->in[k], &ragged[k]);
			n->in_shape[k].dim[0] = -1;
		}
		n->n_out = n_ports(n->ops->outputs);
		struct px_build_priv bp = {
			.arena = m->param_arena, .file = pl->file, .line = ns->line, .col = ns->col,
			.owner = n->owner,
		};
		struct px_rng rng;
		px_rng_seed_label(&rng, seed, ns->name);
		struct px_build b = {
			.struct_size = sizeof b, .node = ns->name, .cfg = n->cfg, .n_in = n->n_in,
			.in = n->in_shape, .in_ragged = ragged, .rng = &rng, .host = &reg->host,
			.priv = &bp,
		};
		rc = n->ops->create(&b, &n->self, n->out_shape, err);
		if (!rc)
			rc = add_params(m, n, &bp, err);
		px_build_priv_free(&bp);
		if (rc) {
			if (!err->line)  /* place errors the plugin did not place */
				px_error_at(err, rc, pl->file, ns->line, ns->col, "%s: %s", n->owner, err->msg);
			goto fail;
		}
		for (int k = 0; k < n->n_out; k++)
			n->out_shape[k].dim[0] = -1;
		bool ng = n->n_params > 0;
		for (int k = 0; k < n->n_in; k++)
			if (n->in[k].node >= 0)
				ng |= m->nodes[n->in[k].node].needs_grad;
		n->needs_grad = ng;
	}
	m->trainable = calloc((size_t)(m->n_params ? m->n_params : 1), sizeof *m->trainable);
	if (!m->trainable) {
		rc = px_error_set(err, PX_ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (int k = 0; k < m->n_params; k++)
		if (m->params[k]->trainable)
			m->trainable[m->n_trainable++] = m->params[k];
	*out = m;
	return 0;
fail:
	px_model_free(m);
	return rc;
}

void px_model_free(struct px_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n_nodes; i++) {
		struct px_node *n = &m->nodes[i];
		if (n->self && n->ops->destroy)
			n->ops->destroy(n->self);
		px_config_free(n->cfg);
		free(n->owner);
	}
	free(m->nodes);
	for (int k = 0; k < m->n_params; k++)
		free(m->param_names[k]);
	free(m->param_names);
	free(m->params);
	free(m->trainable);
	px_arena_free(m->param_arena);
	px_arena_free(m->step_arena);
	free(m);
}

const struct px_tensor *px_model_output(const struct px_model *m, struct px_src s)
{
	if (s.node == -1)
		return s.port == 0 ? m->x : m->y;
	if (s.node < 0)
		return NULL;
	return m->nodes[s.node].out_t[s.port];
}

int px_model_forward(struct px_model *m, const struct px_tensor *x, const struct px_tensor *y,
		     bool train, struct px_error *err)
{
	px_arena_reset(m->step_arena);
	m->x = (struct px_tensor *)x;
	m->y = (struct px_tensor *)y;
	m->step++;
	for (int i = 0; i < m->n_nodes; i++) {
		struct px_node *n = &m->nodes[i];
		for (int k = 0; k < n->n_in; k++)
			n->in_t[k] = n->in[k].node == UNCONNECTED ? NULL : px_model_output(m, n->in[k]);
		if (n->label_needed && !y)
			return px_error_set(err, PX_ERR_INVALID, "%s needs the label, which this data has not",
					    n->owner);
		memset(n->out_t, 0, sizeof n->out_t);
		memset(n->d_out_t, 0, sizeof n->d_out_t);
		struct px_rng rng;  /* a stream per (seed, step, node): independent of history */
		px_rng_seed(&rng, m->seed ^ ((uint64_t)m->step * 0x9e3779b97f4a7c15ull) ^ n->rng_salt);
		struct px_fwd f = {
			.n_in = n->n_in, .in = n->in_t, .out = n->out_t, .arena = m->step_arena,
			.rng = &rng, .train = train,
		};
		int rc = n->ops->forward(n->self, &f, err);
		if (rc)
			return px_error_prefix(err, "%s", n->owner), rc;
		for (int k = 0; k < n->n_out; k++)
			if (!n->out_t[k])
				return px_error_set(err, PX_ERR_INVALID, "%s: forward left output '%s' unset",
						    n->owner, n->ops->outputs[k].name);
	}
	return 0;
}

struct px_tensor *px_model_grad_buffer(struct px_model *m, struct px_src s)
{
	if (s.node < 0)
		return NULL;
	struct px_node *n = &m->nodes[s.node];
	if (!n->needs_grad || (n->ops->outputs[s.port].flags & PX_PORT_NO_GRAD))
		return NULL;
	if (!n->d_out_t[s.port])
		n->d_out_t[s.port] = px_tensor_like(m->step_arena, n->out_t[s.port]);
	return n->d_out_t[s.port];
}

struct report_ctx {
	struct px_model *m;
	const char *node;
};

static void report_tramp(void *ctx, const char *series, int64_t step, double value)
{
	struct report_ctx *rc = ctx;
	rc->m->report(rc->m->report_ctx, rc->node, series, step, value);
}

int px_model_backward(struct px_model *m, struct px_error *err)
{
	for (int i = m->n_nodes - 1; i >= 0; i--) {
		struct px_node *n = &m->nodes[i];
		if (!n->needs_grad)
			continue;
		bool any = false;
		for (int k = 0; k < n->n_out; k++)
			any |= n->d_out_t[k] != NULL;
		if (!any)
			continue;
		struct px_tensor *d_in[PX_MAX_PORTS] = {0};
		int np = n_ports(n->ops->inputs);
		for (int k = 0; k < n->n_in; k++) {
			int port = k < np ? k : np - 1;
			if (n->in[k].node < 0 || (n->ops->inputs[port].flags & PX_PORT_NO_GRAD))
				continue;
			if (k == 0 && (n->ops->flags & PX_LAYER_IDS_INPUT))
				continue;
			d_in[k] = px_model_grad_buffer(m, n->in[k]);
			if (n->in[k].node >= 0 && m->nodes[n->in[k].node].needs_grad && !d_in[k] &&
			    !(m->nodes[n->in[k].node].ops->outputs[n->in[k].port].flags & PX_PORT_NO_GRAD))
				return px_error_set(err, PX_ERR_NOMEM, "out of memory for gradients");
		}
		struct report_ctx rctx = {m, n->name};
		struct px_bwd b = {
			.n_in = n->n_in, .in = n->in_t, .out = (const struct px_tensor *const *)n->out_t,
			.d_out = (const struct px_tensor *const *)n->d_out_t, .d_in = d_in,
			.arena = m->step_arena, .report = m->report ? report_tramp : NULL,
			.report_ctx = &rctx,
		};
		int rc = n->ops->backward(n->self, &b, err);
		if (rc)
			return px_error_prefix(err, "%s backward", n->owner), rc;
	}
	return 0;
}

void px_model_zero_grad(struct px_model *m)
{
	for (int k = 0; k < m->n_trainable; k++) {
		struct px_tensor *g = m->trainable[k]->grad;
		memset(g->data, 0, (size_t)px_tensor_numel(g) * sizeof(float));
	}
}

static bool finite_all(const struct px_tensor *t)
{
	if (!t)
		return true;
	int64_t n = px_tensor_numel(t);
	for (int64_t i = 0; i < n; i++)
		if (!isfinite(t->data[i]))
			return false;
	return true;
}

const char *px_model_find_nonfinite_output(const struct px_model *m)
{
	for (int i = 0; i < m->n_nodes; i++)
		for (int k = 0; k < m->nodes[i].n_out; k++)
			if (!finite_all(m->nodes[i].out_t[k]))
				return m->nodes[i].name;
	return NULL;
}

const char *px_model_find_nonfinite_grad(const struct px_model *m)
{
	for (int i = m->n_nodes - 1; i >= 0; i--) {
		const struct px_node *n = &m->nodes[i];
		for (int k = 0; k < n->n_params; k++)
			if (!finite_all(m->params[n->param_begin + k]->grad))
				return n->name;
		/* the gradient this node passed to its inputs */
		for (int k = 0; k < n->n_in; k++)
			if (n->in[k].node >= 0 && !finite_all(m->nodes[n->in[k].node].d_out_t[n->in[k].port]))
				return n->name;
	}
	return NULL;
}

void px_model_reset_state(struct px_model *m)
{
	for (int i = 0; i < m->n_nodes; i++)
		if (m->nodes[i].ops->reset_state)
			m->nodes[i].ops->reset_state(m->nodes[i].self);
}

int64_t px_model_param_count(const struct px_model *m, int node)
{
	int64_t c = 0;
	const struct px_node *n = &m->nodes[node];
	for (int k = 0; k < n->n_params; k++)
		if (m->params[n->param_begin + k]->trainable)
			c += px_tensor_numel(m->params[n->param_begin + k]->value);
	return c;
}
