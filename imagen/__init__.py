"""imagen: prompt to image through FLUX backends, with every step kept in an event ledger."""

__version__ = "0.1.0"
