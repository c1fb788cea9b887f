"""Pure projections of the ledger: read models derived from events alone."""
