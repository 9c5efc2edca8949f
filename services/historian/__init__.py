"""The historian: schema migrations for the run history (TimescaleDB or plain PostgreSQL)."""
