"""Kafka plumbing shared by every consumer and producer.

Owns dead letters (`dead_letters`), topic administration (`admin`), consumer lag (`lag`), the
consumers' group names (`groups`) and the AsyncAPI document (`asyncapi`). The relay's lag belongs
to the relay (`services.relay.publisher`): everything that consumes imports this package, so it
imports none of them.
May import: events, projections, services.settings.
"""
