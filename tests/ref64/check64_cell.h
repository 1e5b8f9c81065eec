/* Checks a recurrent cell (struct px_cell_ops, core/include/plexus/layer.h) against the float64
 * cell step of the reference (ref_rec_cell in ref64.h), with check64_layer's two checks: the
 * reference's gradient by central differences in double (eps 1e-6, |a-n| <= 1e-5 + 1e-3|n|,
 * L = <w, s_next> with a random projection w of every element of s_next), for every element of
 * x, s_prev and the four parameters; and the float32 cell against the reference, normalised MSE
 * <= 1e-7 of s_next (forward) and of d_x, d_s_prev and the parameter gradients (backward,
 * d_s_next = w).
 *
 * The cell runs inside a small test layer (ports x [B, input] and s [S, B, H], output s_next),
 * so that the public harness builds it and owns its parameters, which it declares itself with
 * the prefix "cell.". That layer also holds the cell to its ABI: the cache it hands to step is
 * filled with NaN (the caller owes no zeroed memory), and step_backward gets d_x and d_s_prev
 * already holding CHECK64_CELL_PREFILL, which is subtracted afterwards, so a cell that wrote
 * instead of adding would be off by that much everywhere. */
#ifndef PX_CHECK64_CELL_H
#define PX_CHECK64_CELL_H

#include "check64.h"

#define CHECK64_CELL_PREFILL 0.015625f   /* 2^-6: exact, and small next to the gradients */

struct check64_cell_opts {
	bool no_dx;     /* step_backward gets d_x = NULL (it must skip it); x is not checked */
	uint64_t seed;  /* x and s_prev are U(-1, 1) from this seed (0: 11) */
};

/* Checks `cell` at batch B with `input` features and `hidden` units. ref: a reference made by
 * ref_rec_cell for the same kind and hidden (filled and freed here). o may be NULL. Prints
 * check64's line named `name`; returns 0, or -1 with a message on stderr. */
int check64_cell(const char *name, const struct px_cell_ops *cell, int64_t batch, int64_t input,
		 int64_t hidden, struct ref_layer *ref, const struct px_host *host,
		 const struct check64_cell_opts *o, struct check64_result *res);

#endif
