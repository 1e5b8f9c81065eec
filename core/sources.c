/* Built-in data sources. */
#include "internal.h"

const struct px_source_ops *const px_builtin_sources[] = {NULL};
