"""The field telemetry gateway: adapters -> point map -> quality checks -> MeasurementBatch."""
