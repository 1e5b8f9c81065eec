/* plexus plugin: lstm (placeholder: registers nothing yet). */
#include <plexus/plugin.h>

static const struct px_plugin plugin = {
	.struct_size = sizeof(struct px_plugin),
	.abi_major = PX_ABI_MAJOR,
	.abi_minor = PX_ABI_MINOR,
	.name = "lstm",
	.version = "0.1.0",
	.doc = "lstm layers",
};

PX_PLUGIN_ENTRY(plugin)
