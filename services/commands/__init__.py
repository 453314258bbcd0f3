"""The command side: decide, check the rules, store events with optimistic concurrency.

Owns the event-sourced application (`application`), the handlers that turn each command into a
decision of the domain (`handlers`), the event store's recorders with receipts, the scorer's
tables and the transparency log written in the same transaction, and their versioned migrations
(`event_store`), the table from failures to what HTTP and Kafka answer (`rejections`), and the
`okr.commands` consumer (`consumer`).
May import: domain, events, projections, services.access, services.kafka (dead letters),
services.relay (the wake-up), services.scoring (what a KPI batch writes), services.settings,
services.stores, services.transparency (the log's tables). Never the HTTP, dashboard or CLI
entry points.
"""
