"""The historian: schema migrations for the run history (TimescaleDB or plain PostgreSQL),
the writer that stores a site's JetStream state stream in it (writer.py), the one that
stores the site's telemetry as measurements (measurements.py), and the History API
(history_service.py over queries.py and measured.py)."""
