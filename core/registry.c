/* Plugin loader and registry. */
#include "internal.h"

const struct px_plugin px_core_plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "core",
	.version = PX_VERSION,
	.doc = "built-in layers, losses, optimizers and data sources",
	.layers = px_builtin_layers,
	.losses = px_builtin_losses,
	.optims = px_builtin_optims,
	.sources = px_builtin_sources,
};
