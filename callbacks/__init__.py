"""Method callbacks, one module per method: the Lightning face of a functional core (installed as sstkit.callbacks)."""

__all__: list[str] = []
