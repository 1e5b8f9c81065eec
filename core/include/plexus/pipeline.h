/* plexus — the command line as a library call. The `plexus` executable is
 * `return px_cli_main(argc, argv);`; embedding programs may call it the same way.
 * Exit codes: 0 success, 1 runtime failure, 2 usage or pipeline error. */
#ifndef PLEXUS_PIPELINE_H
#define PLEXUS_PIPELINE_H

#include "plexus/error.h"

#ifdef __cplusplus
extern "C" {
#endif

PX_API int px_cli_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
