"""microfang.tools.wasm (the repo's tools/wasm/ folder): the wasm module reader and rewriter, fuel
metering and the wasm-tools wrappers the build uses."""
