"""microfang (the repo's host/ folder): the CPython side — the gateway, its plug-ins and the
library behind the `microfang` command.

One distribution, four folders, import names under `microfang` only (pyproject.toml's
package-dir): host/ -> microfang, firmware/ -> microfang.firmware, tools/ -> microfang.tools,
boards/ -> microfang.boards. Imports are absolute and name the module they need
(`from microfang.gateway.store import Store`), never relative, never a bare `host` or `tools`.

Layers: firmware/ imports nothing from the host; microfang.request and microfang.config are
what plug-ins (microfang.llm, microfang.memory, microfang.bridges) may import; the gateway
(microfang.gateway) composes them in gateway/services.py; cli.py prints what the library
returns. tests/test_architecture.py checks the import graph.
"""
