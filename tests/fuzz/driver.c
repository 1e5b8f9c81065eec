/* Replays fuzz inputs without libFuzzer: every file named on the command line, or in a
 * directory named there, goes through LLVMFuzzerTestOneInput once. The test suite runs each
 * target over its committed corpus this way (any compiler, no clang needed). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: cannot open\n", path);
		return 1;
	}
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf = malloc(cap);
	size_t got;
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			uint8_t *nb = realloc(buf, cap *= 2);
			if (!nb)
				free(buf);
			buf = nb;
		}
	}
	fclose(f);
	if (!buf) {
		fprintf(stderr, "%s: out of memory\n", path);
		return 1;
	}
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int files = 0, bad = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: not found\n", argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			bad += run_file(argv[i]);
			files++;
			continue;
		}
		struct dirent **list;
		int n = scandir(argv[i], &list, NULL, alphasort);
		if (n < 0) {
			fprintf(stderr, "%s: cannot list\n", argv[i]);
			return 1;
		}
		for (int k = 0; k < n; k++) {
			char p[4096];
			snprintf(p, sizeof p, "%s/%s", argv[i], list[k]->d_name);
			if (list[k]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
				bad += run_file(p);
				files++;
			}
			free(list[k]);
		}
		free(list);
	}
	printf("%d inputs replayed through %s\n", files, argv[0]);
	return bad || files == 0;
}
