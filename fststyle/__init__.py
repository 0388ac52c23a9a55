"""fststyle: fast neural style transfer training, instant stylisation, and the optimisation reference engines."""
