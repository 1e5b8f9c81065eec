/* The plexus command: all of its logic lives in libplexus (core/cli.c). */
#include "plexus/pipeline.h"

int main(int argc, char **argv)
{
	return px_cli_main(argc, argv);
}
