/* Fuzz target: pipeline YAML. px_pipeline_load (syntax, structure, nesting, aliases, keys); a
 * pipeline it accepts then goes through px_session_open with the core's built-in kinds only
 * (option schemas, data sources, model building, loss and optimizer), as `plexus validate`.
 * Runs from the source root so the seeds' tests/data files are found. Two guards keep the
 * fuzzer on parsing: no session for pipelines naming plugin directories (loading arbitrary
 * shared objects is not what is tested) or holding numbers of more than three digits or with
 * an exponent (a legitimate request for a huge model or data set would only measure the
 * allocator). */
#include <ctype.h>
#include <stdlib.h>

#include "fuzz.h"
#include "internal.h"

/* no run of more than three digits, no exponent ("1e8") */
static bool small_numbers(const uint8_t *d, size_t n)
{
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		if (run && (d[i] == 'e' || d[i] == 'E'))
			return false;
		run = isdigit(d[i]) ? run + 1 : 0;
		if (run > 3)
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {   /* the core's kinds only, whatever the environment says */
		setenv("PLEXUS_PLUGIN_PATH", "", 1);
		setenv("PLEXUS_PLUGINSDIR", "", 1);
		init = true;
	}
	const char *path = fuzz_file(0, data, size);
	struct px_pipeline *p;
	struct px_error err;
	if (px_pipeline_load(path, NULL, 0, &p, &err))
		return 0;
	bool deeper = p->n_plugin_paths == 0 && small_numbers(data, size);
	px_pipeline_free(p);
	if (!deeper)
		return 0;
	struct px_session_opts o = {.want_test = true};
	struct px_session *s;
	if (px_session_open(path, &o, &s, &err) == 0)
		px_session_free(s);
	return 0;
}
