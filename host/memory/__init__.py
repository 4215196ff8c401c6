"""microfang.memory (the repo's host/memory/): gateway vector memory — embedders, the SQLite +
sqlite-vec store (or PostgreSQL + pgvector), and the mem.put / mem.search request kinds. A
gateway plug-in: imports only microfang.request and microfang.config of the host."""
