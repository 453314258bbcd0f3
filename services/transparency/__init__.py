"""Proof for auditors: a Merkle transparency log over every stored event, with signed checkpoints.

Owns the tree's arithmetic (`merkle`, a port of Go's sumdb `tlog` stored-hash layout), its tables
in the event store, appended in the transaction that stores the events (`log_store`), the signing
key and its rotation (`signing`), checkpoints made, kept and published (`checkpoints`), proofs
(`proofs`), the search for what a forger changed (`tampering`), and the checker an auditor runs on
their own machine (`tlog_check`, standard library and `cryptography` only, so it can be copied out).
May import: domain, events, projections, services.kafka, services.settings, services.stores.
"""
