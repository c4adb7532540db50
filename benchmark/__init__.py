"""bench: do protective perturbations on portraits survive real-world image transformations?"""

__version__ = "0.1.0"
