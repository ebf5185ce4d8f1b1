"""The ``sstkit`` subcommands, one module each, registered in :data:`sstkit.cli.COMMANDS` and imported only when run.

``trainer`` holds LightningCLI's ``fit / validate / test / predict``; the others (``delta``, ``patch``,
``quantize``, ``backdoor``) are sstkit's own.
"""
