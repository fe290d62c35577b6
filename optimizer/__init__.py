"""optimizer: trained image models in, small fast validated AWS Lambda artifacts out."""

__version__ = "0.1.0"

# the string-hash seed every build process runs under (PYTHONHASHSEED): tf2onnx's output
# depends on it, and builds must be repeatable across processes and machines
HASH_SEED = "0"
