"""`Reader`, what read models are written against (declared in ledger.interface; kept here
too, where read models import it from). Read-only access is the store itself, opened with
`ledger.open_reader`."""

from ledger.interface import Reader

__all__ = ["Reader"]
