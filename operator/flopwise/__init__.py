"""flopwise: turn a compute budget into the best model it can buy.

Importing the package is cheap and pulls neither torch nor kopf: the operator image has no torch and the
trainer image has no kopf.
"""

__version__ = "0.1.0"
