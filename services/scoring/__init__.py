"""Live KPI scoring: `kpi.events` in, bound key results moved, exactly once.

Owns the scorer (`scorer`), reading KPI events (`decoding`), preparing batches (`preparation`,
in worker processes: `worker`), the KPI series and the scorer's positions (`series_store`,
`series_queries`), the bindings follower (`bindings`) and the collector settings of batch
processes (`gc_tuning`).
May import: domain, events, projections, services.commands, services.kafka, services.relay
(the log follower), services.settings.
"""
