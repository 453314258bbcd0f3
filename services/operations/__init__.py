"""Running the service: the health monitor and the logging of `okr serve` and `okr scorer`.

May import: projections (the job board, failure classes), services.commands, services.kafka,
services.relay, services.stores, services.settings.
"""
