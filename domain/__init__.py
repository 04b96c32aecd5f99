"""Floor 1, the domain: distbot's rules and vocabulary, below the features and the rendering.
Imports storage only.

Money and time as people read them (formats), commission rules (commission), the ledger and
withdrawals (ledger), applying order events (orders), notices (notices), outgoing messages as
values (messages) and how they are queued (outbox), and the typed configuration (config).
It uses storage/ and nothing above it.
"""
