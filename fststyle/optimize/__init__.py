"""The optimisation engines (Gatys, MRF): settings, the pyramid, the engine, and the job on files."""
