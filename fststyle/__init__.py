"""fststyle: fast neural style transfer training (Johnson et al. 2016) with a Gatys/MRF reference engine."""
