/* Allreduce cost for data-parallel training (docs/distributed.md): plexus's ring allreduce
 * (core/comm_mpi.c) and MPI_Allreduce on n floats, median of many calls, each call timed from
 * a barrier so that no rank's lateness is counted. Built with -Dmpi=enabled:
 *   mpirun -np 2 --bind-to none build-mpi/bench/plexus-bench-allreduce [N ...]
 * N defaults to the gradient sizes of the pipelines in pipelines/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "comm.h"
#include "internal.h"

#define CALLS 60

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Median seconds of CALLS calls of one allreduce on buf[0..n), the slowest rank's time. */
static double time_calls(struct px_comm *c, float *buf, size_t n, bool ring)
{
	double t[CALLS];
	struct px_error err;
	for (int k = -3; k < CALLS; k++) {  /* three warm-up calls */
		MPI_Barrier(MPI_COMM_WORLD);
		double t0 = MPI_Wtime();
		if (ring)
			px_comm_allreduce_sum_f32(c, buf, n, &err);
		else
			MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
		double dt = MPI_Wtime() - t0, worst;
		MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
		if (k >= 0)
			t[k] = worst;
		for (size_t i = 0; i < n; i++)  /* keep the values bounded */
			buf[i] = 1.0f;
	}
	qsort(t, CALLS, sizeof t[0], cmp_double);
	return t[CALLS / 2];
}

int main(int argc, char **argv)
{
	static const long defaults[] = {2633, 22000, 140000, 559626, 1000000, 4000000};
	struct px_comm *c;
	struct px_error err;
	setenv("PLEXUS_MPI", "1", 0);
	if (px_comm_open(&c, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	int n_sizes = argc > 1 ? argc - 1 : (int)(sizeof defaults / sizeof defaults[0]);
	if (c->rank == 0)
		printf("%d ranks: floats, MB, ring allreduce ms (GB/s of 2(p-1)/p*bytes), MPI_Allreduce ms\n",
		       c->size);
	for (int i = 0; i < n_sizes; i++) {
		size_t n = (size_t)(argc > 1 ? atol(argv[i + 1]) : defaults[i]);
		float *buf = malloc((n ? n : 1) * sizeof *buf);
		if (!buf)
			return 1;
		for (size_t k = 0; k < n; k++)
			buf[k] = 1.0f;
		double ring = time_calls(c, buf, n, true), mpi = time_calls(c, buf, n, false);
		double moved = 2.0 * (c->size - 1) / c->size * (double)n * sizeof(float);
		if (c->rank == 0)
			printf("%10zu %8.3f %10.3f (%5.2f) %10.3f\n", n, n * 4e-6, ring * 1e3,
			       ring > 0 ? moved / ring * 1e-9 : 0.0, mpi * 1e3);
		free(buf);
	}
	px_comm_close(c);
	return 0;
}
