/* Built-in layers. */
#include "internal.h"

const struct px_layer_ops *const px_builtin_layers[] = {NULL};
