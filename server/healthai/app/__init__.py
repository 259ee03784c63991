"""The server process: settings, gRPC server assembly, the Ingest service and the ``serve`` command."""
