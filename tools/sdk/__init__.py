"""microfang.tools.sdk (the repo's tools/sdk/ folder): `mf.h`, the C header agents include, and the
example agents (examples/*/agent.toml); shipped in the wheel as package data."""
