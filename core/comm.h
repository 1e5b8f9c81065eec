/* plexus core — the communicator the trainer talks to for data-parallel training.
 *
 * Two implementations: one process (comm.c, always built) and MPI ranks (comm_mpi.c, built
 * with `meson -Dmpi=enabled`). Only the trainer and the CLI see this; layers, optimizers
 * and plugins know nothing of processes. Not installed.
 *
 * Every collective must be called by every rank in the same order with the same sizes. A
 * rank that cannot go on must not return into the training loop: the CLI ends the whole
 * job with px_comm_abort, so no rank is left waiting in a collective. */
#ifndef PLEXUS_COMM_H
#define PLEXUS_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plexus/error.h"

struct px_comm;

struct px_comm_ops {
	const char *name;   /* "local" or "mpi" */
	/* buf[0..n) := its sum over the ranks. The order of the additions is fixed by the rank
	 * count alone (never by timing) and every rank receives the same bytes. */
	int (*allreduce_sum_f32)(struct px_comm *c, float *buf, size_t n, struct px_error *err);
	/* all[r*bytes .. (r+1)*bytes) := rank r's mine[0..bytes), on every rank. */
	int (*allgather)(struct px_comm *c, const void *mine, void *all, size_t bytes,
			 struct px_error *err);
	/* buf[0..bytes) of rank `root` to every rank. */
	int (*bcast)(struct px_comm *c, void *buf, size_t bytes, int root, struct px_error *err);
	/* End every rank of the job with exit status `code`. Does not return (MPI); NULL for
	 * one process, where returning an error is enough. */
	void (*abort)(struct px_comm *c, int code);
	void (*close)(struct px_comm *c);
};

struct px_comm {
	const struct px_comm_ops *ops;
	int rank, size;        /* this process and how many train together */
	int local_size;        /* ranks on this machine (for the BLAS thread count) */
	char host[64];         /* this machine's name, for messages */
	/* Set by the trainer before it returns an error that every rank reached together (a
	 * NaN, disagreeing pipelines): then rank 0 reports it and no abort is needed. */
	bool agreed_failure;
	/* Seconds spent in collectives since the counter was last zeroed (the trainer's). */
	double comm_s;
	double *gathered;      /* px_comm_sum_f64's buffer, grown once, freed by close */
	size_t gathered_n;
};

/* The communicator of this process: MPI when plexus was built with MPI and the process was
 * started by an MPI launcher (mpirun, mpiexec, srun: the launcher's environment variables
 * say so), else one process. PLEXUS_MPI=0 forces one process, PLEXUS_MPI=1 forces MPI.
 * A build without MPI started by a launcher with more than one rank is refused, since
 * every rank would train alone into the same run directory. Close with px_comm_close. */
int px_comm_open(struct px_comm **out, struct px_error *err);
void px_comm_close(struct px_comm *c);

/* The one-process communicator (static; closing it does nothing). */
struct px_comm *px_comm_local(void);

static inline int px_comm_allreduce_sum_f32(struct px_comm *c, float *buf, size_t n,
					    struct px_error *err)
{
	return c->size > 1 ? c->ops->allreduce_sum_f32(c, buf, n, err) : 0;
}

static inline int px_comm_allgather(struct px_comm *c, const void *mine, void *all,
				    size_t bytes, struct px_error *err)
{
	return c->ops->allgather(c, mine, all, bytes, err);
}

static inline int px_comm_bcast(struct px_comm *c, void *buf, size_t bytes, int root,
				struct px_error *err)
{
	return c->size > 1 ? c->ops->bcast(c, buf, bytes, root, err) : 0;
}

/* v[0..n) := its sum over the ranks, added in rank order (0, 1, 2 ...) on every rank, so
 * each rank gets the same bits. For a few counters; n <= 16. */
int px_comm_sum_f64(struct px_comm *c, double *v, int n, struct px_error *err);

/* End the job (MPI) with `code`; returns for one process. */
void px_comm_abort(struct px_comm *c, int code);

#ifdef PX_HAVE_MPI
/* comm_mpi.c: MPI_Init and MPI_COMM_WORLD. */
int px_comm_mpi_open(struct px_comm **out, struct px_error *err);
#endif

#endif
