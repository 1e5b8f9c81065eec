/* The plexus command line: state shared by core/cli.c and core/cli_tools.c. Internal. */
#ifndef PLEXUS_CLI_H
#define PLEXUS_CLI_H

#include "internal.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

/* Parsed command line shared by the commands. */
struct cli {
	const char *cmd;
	const char *pipeline;
	const char *run_dir, *checkpoint, *input, *lengths, *output, *node, *split;
	bool resume, json;
	const char *plugin_paths[32];
	int n_plugin_paths;
	const char *prefer[32];
	int n_prefer;
	const char *sets[64];
	int n_sets;
	const char *prompt, *grid, *out;
	int64_t length, count, beam, index;
	double temperature;
	bool grad_norms;
	const char *input_shape;   /* plugin-check --input-shape */
	const char *args[8];
	int n_args;
};

int px_cli_usage_error(const char *fmt, const char *a);
int px_cli_fail(const struct px_error *err, int rc);
int px_cli_open_session(struct cli *c, bool want_test, bool no_optim, struct px_session **s,
			struct px_error *err);

int px_cmd_diagnose(struct cli *c);
int px_cmd_sample(struct cli *c);
int px_cmd_score(struct cli *c);
int px_cmd_reconstruct(struct cli *c);
int px_cmd_translate(struct cli *c);
int px_cmd_attention(struct cli *c);
int px_cmd_report(struct cli *c);     /* report.c */
int px_cmd_plugin_check(struct cli *c);   /* plugin_check.c */

#endif
