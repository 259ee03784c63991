"""Load-testing harness: closed/open-loop runners, an HDR-style histogram, JSON + PNG reports."""

from healthai_client.loadtest.histogram import LogLinearHistogram
from healthai_client.loadtest.multiproc import run_load_processes
from healthai_client.loadtest.runner import LoadConfig, LoadResult, run_load, run_load_async

__all__ = ["LoadConfig", "LoadResult", "LogLinearHistogram", "run_load", "run_load_async",
           "run_load_processes"]
