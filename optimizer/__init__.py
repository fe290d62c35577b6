"""optimizer: trained image models in, small fast validated AWS Lambda artifacts out."""

__version__ = "0.1.0"
