"""The `okr` command line: every command imports what it needs when it runs.

Owns the main app (`main`), `okr audit` (`audit`) and `okr keys` (`keys`).
May import: anything; it is an entry point.
"""
