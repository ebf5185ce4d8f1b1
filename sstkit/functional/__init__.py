"""Pure method cores usable without a Trainer: ``sstkit.functional.sst``, ``.surgery``, ``.optim_state`` ….

Submodules are imported explicitly (``from sstkit.functional.sst import apply_sst``) so that importing one method
never pulls in another.
"""
