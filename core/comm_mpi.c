/* The MPI communicator (built with `meson setup -Dmpi=enabled`): MPI_COMM_WORLD, with a ring
 * allreduce of our own so that the order of the additions is fixed and every rank ends with
 * the same bytes (MPI_Allreduce promises neither).
 *
 * Ring allreduce of n floats over p ranks, chunk c = [c*n/p, (c+1)*n/p):
 *   reduce-scatter, p-1 steps: rank r sends chunk (r-s) mod p to rank r+1 and adds the
 *     chunk (r-s-1) mod p that rank r-1 sends it; chunk c is summed in ring order
 *     ((x_c + x_{c+1}) + x_{c+2}) + ... and ends complete on rank c-1;
 *   allgather, p-1 steps: the complete chunks travel once more round the ring, copied.
 * Each rank sends and receives 2(p-1)/p * n floats: the bandwidth-optimal amount. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "comm.h"
#include "internal.h"

#define TAG_RING 4242
#define MAX_COUNT (1 << 30)   /* MPI counts are int: larger messages go in pieces */

struct mpi_comm {
	struct px_comm base;  /* first: a struct px_comm * is a struct mpi_comm * */
	float *tmp;           /* one received chunk */
	size_t tmp_n;
};

static int mpi_fail(struct px_error *err, int mrc, const char *what)
{
	char msg[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(mrc, msg, &len) != MPI_SUCCESS)
		snprintf(msg, sizeof msg, "error %d", mrc);
	return px_error_set(err, PX_ERR_IO, "MPI %s failed: %s", what, msg);
}

static size_t chunk_begin(size_t n, int p, int c)
{
	return n * (size_t)c / (size_t)p;
}

/* Send a[0..ns) to `to` while receiving b[0..nr) from `from`, in pieces of MAX_COUNT. */
static int sendrecv_f32(const float *a, size_t ns, int to, float *b, size_t nr, int from,
			struct px_error *err)
{
	while (ns > 0 || nr > 0) {
		int cs = ns > MAX_COUNT ? MAX_COUNT : (int)ns, cr = nr > MAX_COUNT ? MAX_COUNT : (int)nr;
		int mrc = MPI_Sendrecv(a, cs, MPI_FLOAT, to, TAG_RING, b, cr, MPI_FLOAT, from,
				       TAG_RING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		if (mrc != MPI_SUCCESS)
			return mpi_fail(err, mrc, "MPI_Sendrecv");
		a += cs, ns -= (size_t)cs;
		b += cr, nr -= (size_t)cr;
	}
	return 0;
}

static int ring_allreduce(struct px_comm *c, float *buf, size_t n, struct px_error *err)
{
	struct mpi_comm *mc = (struct mpi_comm *)c;
	int p = c->size, r = c->rank;
	int right = (r + 1) % p, left = (r + p - 1) % p;
	size_t biggest = n / (size_t)p + 1;
	if (mc->tmp_n < biggest) {
		float *t = realloc(mc->tmp, biggest * sizeof *t);
		if (!t)
			return px_error_set(err, PX_ERR_NOMEM, "out of memory");
		mc->tmp = t;
		mc->tmp_n = biggest;
	}
	double t0 = MPI_Wtime();
	int rc = 0;
	for (int s = 0; s < p - 1 && !rc; s++) {  /* reduce-scatter */
		int cs = ((r - s) % p + p) % p, cr = ((r - s - 1) % p + p) % p;
		size_t s0 = chunk_begin(n, p, cs), s1 = chunk_begin(n, p, cs + 1);
		size_t r0 = chunk_begin(n, p, cr), r1 = chunk_begin(n, p, cr + 1);
		rc = sendrecv_f32(buf + s0, s1 - s0, right, mc->tmp, r1 - r0, left, err);
		for (size_t i = 0; !rc && i < r1 - r0; i++)
			buf[r0 + i] = mc->tmp[i] + buf[r0 + i];  /* (earlier ranks' sum) + mine */
	}
	for (int s = 0; s < p - 1 && !rc; s++) {  /* allgather */
		int cs = ((r + 1 - s) % p + p) % p, cr = ((r - s) % p + p) % p;
		size_t s0 = chunk_begin(n, p, cs), s1 = chunk_begin(n, p, cs + 1);
		size_t r0 = chunk_begin(n, p, cr), r1 = chunk_begin(n, p, cr + 1);
		rc = sendrecv_f32(buf + s0, s1 - s0, right, buf + r0, r1 - r0, left, err);
	}
	c->comm_s += MPI_Wtime() - t0;
	return rc;
}

static int mpi_allgather(struct px_comm *c, const void *mine, void *all, size_t bytes,
			 struct px_error *err)
{
	if (bytes > MAX_COUNT)
		return px_error_set(err, PX_ERR_INVALID, "allgather of %zu bytes per rank", bytes);
	double t0 = MPI_Wtime();
	int mrc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE,
				MPI_COMM_WORLD);
	c->comm_s += MPI_Wtime() - t0;
	return mrc == MPI_SUCCESS ? 0 : mpi_fail(err, mrc, "MPI_Allgather");
}

static int mpi_bcast(struct px_comm *c, void *buf, size_t bytes, int root, struct px_error *err)
{
	double t0 = MPI_Wtime();
	char *p = buf;
	while (bytes > 0) {
		int k = bytes > MAX_COUNT ? MAX_COUNT : (int)bytes;
		int mrc = MPI_Bcast(p, k, MPI_BYTE, root, MPI_COMM_WORLD);
		if (mrc != MPI_SUCCESS)
			return mpi_fail(err, mrc, "MPI_Bcast");
		p += k, bytes -= (size_t)k;
	}
	c->comm_s += MPI_Wtime() - t0;
	return 0;
}

static void mpi_abort(struct px_comm *c, int code)
{
	(void)c;
	fflush(stdout);
	fflush(stderr);
	MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
}

static void mpi_close(struct px_comm *c)
{
	struct mpi_comm *mc = (struct mpi_comm *)c;
	free(mc->tmp);
	free(c->gathered);
	free(mc);
	int done = 0;
	MPI_Finalized(&done);
	if (!done)
		MPI_Finalize();
}

static const struct px_comm_ops mpi_ops = {
	.name = "mpi",
	.allreduce_sum_f32 = ring_allreduce,
	.allgather = mpi_allgather,
	.bcast = mpi_bcast,
	.abort = mpi_abort,
	.close = mpi_close,
};

int px_comm_mpi_open(struct px_comm **out, struct px_error *err)
{
	struct mpi_comm *mc = calloc(1, sizeof *mc);
	if (!mc)
		return px_error_set(err, PX_ERR_NOMEM, "out of memory");
	int provided, mrc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
	if (mrc != MPI_SUCCESS) {
		free(mc);
		return mpi_fail(err, mrc, "MPI_Init_thread");
	}
	struct px_comm *c = &mc->base;
	c->ops = &mpi_ops;
	MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
	MPI_Comm_size(MPI_COMM_WORLD, &c->size);
	MPI_Comm node;  /* the ranks sharing this machine's memory */
	c->local_size = 1;
	if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL,
				&node) == MPI_SUCCESS) {
		MPI_Comm_size(node, &c->local_size);
		MPI_Comm_free(&node);
	}
	char name[MPI_MAX_PROCESSOR_NAME];
	int len = 0;
	if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS)
		len = 0;
	snprintf(c->host, sizeof c->host, "%.*s", len, name);
	*out = c;
	return 0;
}
