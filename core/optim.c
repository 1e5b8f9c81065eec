/* Built-in optimizers. */
#include "internal.h"

const struct px_optim_ops *const px_builtin_optims[] = {NULL};
