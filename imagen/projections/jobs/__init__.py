"""The job-list read model: fold (pure), table (kept in the ledger database), query (plain SQL)."""
