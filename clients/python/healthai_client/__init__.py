"""Python SDK for the healthai gRPC service (uses only the generated stubs in ``healthai.v1``).

    from healthai_client import Client
    with Client("127.0.0.1:50051") as c:
        print(c.health())
"""

from healthai_client.client import Client
from healthai_client.cohort_table import CohortRows, read_cohort_rows
from healthai_client.errors import HealthAIClientError
from healthai_client.history_file import HistoryFile, read_history
from healthai_client.results import (
    ForecastResult,
    IngestResult,
    PatientScore,
    RecordIssue,
    RecordOutcome,
    ScoreResult,
)
from healthai_client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "Client",
    "CohortRows",
    "ForecastResult",
    "HealthAIClientError",
    "HistoryFile",
    "IngestResult",
    "PatientScore",
    "RecordIssue",
    "RecordOutcome",
    "RetryPolicy",
    "ScoreResult",
    "read_cohort_rows",
    "read_history",
]
