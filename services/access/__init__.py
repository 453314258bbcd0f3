"""Who may do what: API keys, roles and Kafka principals.

Owns the principals and their permissions (`principals`) and the keys file (`keys`).
May import: domain, events, services.settings.
"""
