"""Each node's signed, hash-chained credit ledger: pure chain rules plus one SQLite store."""
