/* The plexus command line. */
#include <stdio.h>

#include "internal.h"
#include "plexus/pipeline.h"

int px_cli_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "plexus: not yet\n");
	return 2;
}
