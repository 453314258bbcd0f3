"""Proof for auditors: a Merkle transparency log over every stored event, with signed checkpoints.

Owns the tree's arithmetic (`merkle`, RFC 6962 in Go's sumdb `tlog` stored-hash layout), its tables
in the event store, appended in the transaction that stores the events (`log_store`), the signing
key and its rotation (`signing`), and the checker an auditor runs on their own machine
(`tlog_check`: standard library and `cryptography` only, so it can be copied out). Making,
publishing and proving checkpoints from a running store is `services.audit`'s.
May import: domain (the canonical bytes of an event).
"""
