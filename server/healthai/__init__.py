"""healthai: gRPC inference service for public-health AI."""

__version__ = "0.1.0"
