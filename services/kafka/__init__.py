"""Kafka plumbing shared by every consumer and producer.

Owns dead letters (`dead_letters`), topic administration (`admin`), consumer lag (`lag`) and the
AsyncAPI document (`asyncapi`).
May import: events, projections, services.settings; for lag, the groups' names and the relay's
position: services.commands, services.relay, services.scoring.
"""
