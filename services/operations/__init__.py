"""Running the service: the health monitor, the logging of `okr serve` and `okr scorer`, the job
board's metrics (`job_metrics`: jobs up, dead letters, stage timings), and the stores' schema
migrations as an operator sees them (`schema_status`).

May import: projections (the job board, failure classes), services.commands, services.kafka,
services.relay, services.stores, services.settings.
"""
