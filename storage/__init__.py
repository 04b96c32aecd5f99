"""Floor 0 (the ground): models, tables, migrations, the engine; the Writer (every write), the
Reader (every read), group commit and the durable queue. Imports nothing of ours."""
