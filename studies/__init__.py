"""What do users run?  Embedded datasets, SNN architectures, surrogate-gradient training,
Monte Carlo robustness studies, figures and the ``xbar`` command line."""
