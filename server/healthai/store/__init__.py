"""Durable, append-only Parquet store of normalized records (see ``healthai.store.parquet``)."""

from healthai.store.parquet import CommitResult, ParquetStore, new_batch_id

__all__ = ["CommitResult", "ParquetStore", "new_batch_id"]
