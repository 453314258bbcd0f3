"""Kafka plumbing shared by every consumer and producer.

Owns the one Kafka consumer that the command consumer, the projector and the scorer run on, and
the producer of their outcomes (`consumer`), dead letters (`dead_letters`), topic administration
(`admin`), consumer lag (`lag`), the consumers' group names (`groups`) and the AsyncAPI document
(`asyncapi`, the one use of FastStream with the security parsing in `services.settings`). The
relay's lag belongs to the relay (`services.relay.publisher`): everything that consumes imports
this package, so it imports none of them.
May import: events, projections, services.settings.
"""
