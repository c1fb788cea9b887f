"""Names of the ledger's schema that readers need without importing SQLAlchemy."""

# Revisions of the `ledger` branch, oldest first. The last is the head this code expects: a
# ledger at head opens without importing alembic. tests/test_ledger.py keeps this in step
# with alembic/versions.
LEDGER_REVISIONS: tuple[str, ...] = ("ledger_0001", "ledger_0002")
LEDGER_HEAD = LEDGER_REVISIONS[-1]
LEDGER_VERSION_TABLE = "ledger_alembic_version"

COLUMNS = (
    "position, event_id, stream_id, stream_version, type, schema_version, data, recorded_at, "
    "prev_hash, hash"
)
