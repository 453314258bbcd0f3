"""Who may do what: API keys, roles and Kafka principals.

Owns the principals and their permissions (`principals`) and the keys file (`keys`). The settings
validate `OKR_API_KEYS` with the parsers here, so this package reads them through a protocol.
May import: domain, events.
"""
