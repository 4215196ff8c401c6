"""Gateway vector memory (microfang.memory): embedders, the SQLite + sqlite-vec store (or
PostgreSQL + pgvector), and the mem.put / mem.search request kinds."""
