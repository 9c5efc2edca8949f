"""The historian: schema migrations for the run history (TimescaleDB or plain PostgreSQL),
and the writer that stores a site's JetStream state stream in it (writer.py)."""
