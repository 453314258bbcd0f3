"""For developers and demos, never needed in production.

Owns the local Apache Kafka (`local_kafka`) and the seed's demo (`demo`, `demo_scenario`).
May import: domain, events, services.kafka, services.settings, services.access.
"""
