/* Arenas, tensors, rng and gemm glue. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

START_TEST(test_arena_alignment_and_reuse_after_reset)
{
	struct px_arena *a = px_arena_new(256);
	void *p1 = px_arena_alloc(a, 10);
	void *p2 = px_arena_alloc(a, 1000);  /* bigger than a block */
	ck_assert_ptr_nonnull(p1);
	ck_assert_ptr_nonnull(p2);
	ck_assert_uint_eq((uintptr_t)p1 % 64, 0);
	ck_assert_uint_eq((uintptr_t)p2 % 64, 0);
	px_arena_reset(a);
	/* after a reset the peak fits in one block: same sequence reuses memory */
	void *q1 = px_arena_alloc(a, 10);
	void *q2 = px_arena_alloc(a, 1000);
	ck_assert_ptr_eq((char *)q2, (char *)q1 + 64);
	px_arena_reset(a);
	ck_assert_ptr_eq(px_arena_alloc(a, 10), q1);
	px_arena_free(a);
}
END_TEST

START_TEST(test_tensor_new_is_zeroed_and_view_shares_data)
{
	struct px_arena *a = px_arena_new(0);
	struct px_tensor *t = px_tensor_new3(a, 2, 3, 4);
	ck_assert_int_eq(px_tensor_numel(t), 24);
	for (int i = 0; i < 24; i++)
		ck_assert_float_eq(t->data[i], 0.0f);
	int64_t s[2] = {6, 4};
	struct px_tensor *v = px_tensor_view(a, t, 2, s);
	ck_assert_ptr_eq(v->data, t->data);
	int64_t bad[2] = {5, 4};
	ck_assert_ptr_null(px_tensor_view(a, t, 2, bad));
	int64_t huge[3] = {INT64_MAX / 2, 4, 4};
	ck_assert_ptr_null(px_tensor_new(a, 3, huge));  /* overflow is refused, not wrapped */
	px_arena_free(a);
}
END_TEST

START_TEST(test_rng_is_deterministic_and_uniform_in_range)
{
	struct px_rng r1, r2;
	px_rng_seed(&r1, 42);
	px_rng_seed(&r2, 42);
	for (int i = 0; i < 100; i++)
		ck_assert_uint_eq(px_rng_u64(&r1), px_rng_u64(&r2));
	double mean = 0, var = 0;
	for (int i = 0; i < 20000; i++) {
		double u = px_rng_uniform(&r1);
		ck_assert(u >= 0 && u < 1);
		double z = px_rng_normal(&r2);
		mean += z;
		var += z * z;
	}
	mean /= 20000;
	var /= 20000;
	ck_assert(fabs(mean) < 0.05);
	ck_assert(fabs(var - 1) < 0.05);
	struct px_rng a, b;
	px_rng_seed_label(&a, 7, "enc");
	px_rng_seed_label(&b, 7, "dec");
	ck_assert_uint_ne(px_rng_u64(&a), px_rng_u64(&b));
}
END_TEST

START_TEST(test_gemm_matches_naive_product_for_all_transposes)
{
	float A[6] = {1, 2, 3, 4, 5, 6};    /* [2,3] */
	float B[6] = {7, 8, 9, 10, 11, 12}; /* [3,2] */
	float C[4] = {1, 1, 1, 1};
	px_gemm(false, false, 2, 2, 3, 1.0f, A, 3, B, 2, 1.0f, C, 2);
	ck_assert_float_eq(C[0], 1 + 58);
	ck_assert_float_eq(C[1], 1 + 64);
	ck_assert_float_eq(C[2], 1 + 139);
	ck_assert_float_eq(C[3], 1 + 154);
	/* A^T [3,2] @ A [2,3]... use A^T A = [3,3] */
	float D[9];
	px_gemm(true, false, 3, 3, 2, 1.0f, A, 3, A, 3, 0.0f, D, 3);
	ck_assert_float_eq(D[0], 1 * 1 + 4 * 4);
	ck_assert_float_eq(D[4], 2 * 2 + 5 * 5);
	/* A A^T [2,2] */
	float E[4];
	px_gemm(false, true, 2, 2, 3, 2.0f, A, 3, A, 3, 0.0f, E, 2);
	ck_assert_float_eq(E[1], 2 * (1 * 4 + 2 * 5 + 3 * 6));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tensor");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_arena_alignment_and_reuse_after_reset);
	tcase_add_test(tc, test_tensor_new_is_zeroed_and_view_shares_data);
	tcase_add_test(tc, test_rng_is_deterministic_and_uniform_in_range);
	tcase_add_test(tc, test_gemm_matches_naive_product_for_all_transposes);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
