/* Test helper: run the plexus executable and capture its exit code, stdout and stderr.
 * Header-only. The executable is $PLEXUS_EXE; tests run from the source root. */
#ifndef PX_TEST_CLI_UTIL_H
#define PX_TEST_CLI_UTIL_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct run {
	int code;        /* exit status, or 128+signal */
	char out[65536];
	char err[65536];
};

static void slurp(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	size_t got = f ? fread(buf, 1, n - 1, f) : 0;
	buf[got] = 0;
	if (f)
		fclose(f);
}

/* Run plexus with argv (NULL-terminated, without the program name). */
static inline int run_plexus_argv(struct run *r, const char *const *args)
{
	const char *argv[64];
	int argc = 0;
	const char *exe = getenv("PLEXUS_EXE");
	argv[argc++] = exe ? exe : "plexus";
	for (int i = 0; args[i] && argc < 63; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	char o[64], e[64];
	snprintf(o, sizeof o, "/tmp/px-cli-out-%d", (int)getpid());
	snprintf(e, sizeof e, "/tmp/px-cli-err-%d", (int)getpid());
	pid_t pid = fork();
	if (pid == 0) {
		int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fo, 1);
		dup2(fe, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	slurp(o, r->out, sizeof r->out);
	slurp(e, r->err, sizeof r->err);
	unlink(o);
	unlink(e);
	return r->code;
}

/* run_plexus(&r, "train", "x.yaml", "--set", "a=b", NULL) */
static inline int run_plexus(struct run *r, ...)
{
	const char *args[64];
	int n = 0;
	va_list ap;
	va_start(ap, r);
	const char *a;
	while ((a = va_arg(ap, const char *)) && n < 63)
		args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	return run_plexus_argv(r, args);
}

/* The first line of s, copied into buf. */
static inline const char *first_line(const char *s, char *buf, size_t n)
{
	size_t i = 0;
	while (s[i] && s[i] != '\n' && i + 1 < n) {
		buf[i] = s[i];
		i++;
	}
	buf[i] = 0;
	return buf;
}

/* A fresh temporary directory (mkdtemp). */
static inline const char *temp_dir(char *buf, size_t n)
{
	snprintf(buf, n, "/tmp/px-test-XXXXXX");
	return mkdtemp(buf);
}

#endif
