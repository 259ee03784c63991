"""The Ingest service: FHIR R4, flat records and Arrow batches in; normalized, pseudonymized records
stored durably with per-record outcomes and a receipt. A peer of ``healthai.serving``."""
