/* Option validation against schemas. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const struct px_param_spec schema[] = {
	{"hidden", PX_T_INT, NULL, 1, 1e9, NULL, "units"},
	{"layers", PX_T_INT, "1", 1, 64, NULL, "stacked layers"},
	{"dropout", PX_T_FLOAT, "0", 0, 1, NULL, "dropout between layers"},
	{"bidirectional", PX_T_BOOL, "false", 0, 0, NULL, "both directions"},
	{"readout", PX_T_ENUM, "sequence", 0, 0, "sequence|last|mean|max", "what to output"},
	{"sizes", PX_T_INTS, "[784, 64]", 1, 1e9, NULL, "layer sizes"},
	{NULL, 0, NULL, 0, 0, NULL, NULL},
};

START_TEST(test_defaults_and_values_are_typed)
{
	struct px_config *c;
	struct px_error err;
	ck_assert_int_eq(px_config_parse(schema, "hidden: 8, dropout: 1/4, readout: last", &c, &err), 0);
	ck_assert_int_eq(px_config_int(c, "hidden"), 8);
	ck_assert_int_eq(px_config_int(c, "layers"), 1);
	ck_assert_double_eq(px_config_float(c, "dropout"), 0.25);
	ck_assert(!px_config_bool(c, "bidirectional"));
	ck_assert_str_eq(px_config_str(c, "readout"), "last");
	const int64_t *v;
	ck_assert_int_eq(px_config_ints(c, "sizes", &v), 2);
	ck_assert_int_eq(v[1], 64);
	ck_assert(px_config_is_set(c, "hidden"));
	ck_assert(!px_config_is_set(c, "layers"));
	px_config_free(c);
}
END_TEST

START_TEST(test_bad_values_are_refused_with_the_valid_choices)
{
	struct px_config *c;
	struct px_error err;
	ck_assert_int_eq(px_config_parse(schema, "hidden: 0", &c, &err), PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "options: 'hidden' is 0, must be between 1 and 1e+09");
	ck_assert_int_eq(px_config_parse(schema, "hidden: 4, readout: first", &c, &err), PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "options: 'readout' must be sequence, last, mean or max, got 'first'");
	ck_assert_int_eq(px_config_parse(schema, "hidden: 4, hiden: 3", &c, &err), PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "options: unknown key 'hiden' (valid keys: hidden, layers, dropout, "
			 "bidirectional, readout, sizes)");
	ck_assert_int_eq(px_config_parse(schema, "layers: 2", &c, &err), PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "options: missing required key 'hidden' (units)");
	ck_assert_int_eq(px_config_parse(schema, "hidden: 2.5", &c, &err), PX_ERR_INVALID);
	ck_assert_str_eq(err.msg, "options: 'hidden' must be an integer, got '2.5'");
	ck_assert_int_eq(px_config_parse(schema, "hidden: 3, bidirectional: maybe", &c, &err), PX_ERR_INVALID);
	ck_assert_int_eq(px_config_parse(schema, "hidden: 3, sizes: [1, x]", &c, &err), PX_ERR_INVALID);
}
END_TEST

START_TEST(test_number_parsing_accepts_ratios_and_rejects_junk)
{
	double d;
	ck_assert(px_parse_double("1/255", &d));
	ck_assert_double_eq_tol(d, 1.0 / 255, 1e-15);
	ck_assert(px_parse_double("1e-3", &d));
	ck_assert(!px_parse_double("1/0", &d));
	ck_assert(!px_parse_double("nan", &d));
	ck_assert(!px_parse_double("3x", &d));
	int64_t i;
	ck_assert(!px_parse_int("99999999999999999999", &i));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_defaults_and_values_are_typed);
	tcase_add_test(tc, test_bad_values_are_refused_with_the_valid_choices);
	tcase_add_test(tc, test_number_parsing_accepts_ratios_and_rejects_junk);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
