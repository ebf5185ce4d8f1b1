"""sstkit-only subcommands beyond LightningCLI (``sstkit delta``, ``sstkit patch``), one module each."""
