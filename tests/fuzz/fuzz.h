/* libFuzzer targets for the readers of untrusted files (docs/reliability.md). Each target file
 * defines LLVMFuzzerTestOneInput; built with clang -fsanitize=fuzzer (meson -Dfuzz=enabled,
 * scripts/fuzz.sh) it is a fuzzer, linked with driver.c it replays a corpus (meson test). */
#ifndef PX_FUZZ_H
#define PX_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The readers take paths: hand them an in-memory file (memfd) holding data[0..size), named
 * "/proc/self/fd/N". `slot` picks one of a few files (a target with two inputs uses two). */
static inline const char *fuzz_file(int slot, const uint8_t *data, size_t size)
{
	static int fd[4] = {-1, -1, -1, -1};
	static char path[4][32];
	if (fd[slot] < 0) {
		fd[slot] = memfd_create("px-fuzz", 0);
		if (fd[slot] < 0) {
			perror("memfd_create");
			_exit(1);
		}
		snprintf(path[slot], sizeof path[slot], "/proc/self/fd/%d", fd[slot]);
	}
	if (ftruncate(fd[slot], 0) != 0 || (size && pwrite(fd[slot], data, size, 0) != (ssize_t)size)) {
		perror("memfd write");
		_exit(1);
	}
	return path[slot];
}

#endif
