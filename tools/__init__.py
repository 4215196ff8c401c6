"""microfang.tools (the repo's tools/ folder): the host toolchain — manifest validation
(manifest.py), agent builds (build.py), the wasm reader, rewriter and fuel meter (wasm/),
the agent SDK (sdk/) and microfang's MicroPython port build (portbuild.py). Imported by
absolute name (`from microfang.tools.build import build`)."""
