/* The communicator: choosing one at start-up, and the one-process implementation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "internal.h"

/* ---------------------------------------------------------------- one process */
static int local_allreduce(struct px_comm *c, float *buf, size_t n, struct px_error *err)
{
	(void)c, (void)buf, (void)n, (void)err;
	return 0;  /* the sum over one rank */
}

static int local_allgather(struct px_comm *c, const void *mine, void *all, size_t bytes,
			   struct px_error *err)
{
	(void)c, (void)err;
	memmove(all, mine, bytes);
	return 0;
}

static int local_bcast(struct px_comm *c, void *buf, size_t bytes, int root,
		       struct px_error *err)
{
	(void)c, (void)buf, (void)bytes, (void)root, (void)err;
	return 0;
}

static void local_close(struct px_comm *c)
{
	(void)c;
}

static const struct px_comm_ops local_ops = {
	.name = "local",
	.allreduce_sum_f32 = local_allreduce,
	.allgather = local_allgather,
	.bcast = local_bcast,
	.abort = NULL,
	.close = local_close,
};

static struct px_comm local_comm = {.ops = &local_ops, .rank = 0, .size = 1, .local_size = 1};

struct px_comm *px_comm_local(void)
{
	if (!local_comm.host[0] && gethostname(local_comm.host, sizeof local_comm.host - 1) != 0)
		snprintf(local_comm.host, sizeof local_comm.host, "localhost");
	return &local_comm;
}

/* ---------------------------------------------------------------- choosing */
/* Ranks announced by an MPI launcher (Open MPI's mpirun, MPICH's hydra, Slurm's srun with
 * PMI/PMIx), 0 when the process was not started by one. */
static long launcher_size(void)
{
	static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
						"MPI_LOCALNRANKS", NULL};
	for (int i = 0; size_vars[i]; i++) {
		const char *v = getenv(size_vars[i]);
		if (v && *v)
			return strtol(v, NULL, 10);
	}
	return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 1 : 0;
}

int px_comm_open(struct px_comm **out, struct px_error *err)
{
	*out = px_comm_local();
	const char *force = getenv("PLEXUS_MPI");
	bool want = force && *force ? strcmp(force, "0") != 0 : launcher_size() > 0;
	if (!want)
		return 0;
#ifdef PX_HAVE_MPI
	return px_comm_mpi_open(out, err);
#else
	if (launcher_size() > 1 || (force && *force))
		return px_error_set(err, PX_ERR_UNSUPPORTED,
				    "this plexus was built without MPI (meson setup -Dmpi=enabled), so under "
				    "mpirun every rank would train alone into the same run directory; "
				    "rebuild with MPI or run one process");
	return 0;
#endif
}

void px_comm_close(struct px_comm *c)
{
	if (c)
		c->ops->close(c);
}

void px_comm_abort(struct px_comm *c, int code)
{
	if (c && c->ops->abort)
		c->ops->abort(c, code);
}

int px_comm_sum_f64(struct px_comm *c, double *v, int n, struct px_error *err)
{
	if (n < 0 || n > 16)
		return px_error_set(err, PX_ERR_INVALID, "px_comm_sum_f64: %d values (at most 16)", n);
	if (c->size == 1)
		return 0;
	size_t need = (size_t)c->size * 16;
	if (c->gathered_n < need) {  /* once: no allocation in the steps that follow */
		double *g = realloc(c->gathered, need * sizeof *g);
		if (!g)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		c->gathered = g;
		c->gathered_n = need;
	}
	double *all = c->gathered;
	int rc = px_comm_allgather(c, v, all, (size_t)n * sizeof *v, err);
	for (int i = 0; !rc && i < n; i++) {
		double s = 0;
		for (int r = 0; r < c->size; r++)  /* rank order: the same bits on every rank */
			s += all[(size_t)r * (size_t)n + (size_t)i];
		v[i] = s;
	}
	return rc;
}
