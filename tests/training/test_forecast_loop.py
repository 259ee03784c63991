"""One loop, end to end: FHIR encounters with ILI diagnoses for a small region graph over > 3 seasons
→ Ingest (real gRPC server, real Parquet store) → surveillance counts → `healthai train forecast
--from-store` → export as a new version into the served repository → hot reload → Forecast --stored
answers from the new version, over the newly ingested weeks; then the SDK writes hubverse rows and a
plot of the same forecast."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from healthai.app.server import build_server
from healthai.app.settings import Settings
from healthai.ingest.plugin import IngestPlugin
from healthai.serving.plugin import plugin as serving_plugin
from healthai.serving.settings import ServingSettings
from healthai_client import Client
from healthai_client.exchange import plot_forecast, write_hubverse
from healthai_training import cli

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
REGIONS = {"MA": "US-MA", "NH": "US-NH", "VT": "US-VT", "ME": "US-ME"}
EDGES = [("US-MA", "US-NH"), ("US-MA", "US-VT"), ("US-NH", "US-VT"), ("US-NH", "US-ME")]
FIRST_MONDAY = dt.date(2021, 1, 4)
WEEKS, FIRST_ROUND = 170, 160  # > 3 seasons; the last 10 weeks arrive after the first model
POOL = 4  # patients per region: a week's cases spread over its 7 days, at most POOL per day


def weekly_cases(seed: int = 0) -> np.ndarray:
    """[WEEKS, regions] seasonal counts (peak in winter), different size and phase per region."""
    rng = np.random.default_rng(seed)
    t = np.arange(WEEKS)[:, None]
    size = np.array([14.0, 8.0, 5.0, 6.0])[None, :]
    phase = np.array([0.0, 1.0, 2.0, 3.0])[None, :]
    curve = 1 + size * np.exp(-0.5 * (((t + phase) % 52 - 5) / 4.0) ** 2)
    return np.minimum(rng.poisson(curve), 7 * POOL)


def bundle(region: str, weeks: range, cases: np.ndarray) -> bytes:
    """A transaction Bundle: the region's patients, then one Encounter + ILI Condition per case."""
    state = region.split("-")[1]
    entries = []
    for p in range(POOL):
        pid = f"{state.lower()}-{p}"
        entries.append({"fullUrl": f"urn:uuid:{pid}", "resource": {
            "resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-01-01",
            "address": [{"state": state, "country": "US"}]}})
    for w in weeks:
        for k in range(int(cases[w])):
            day = FIRST_MONDAY + dt.timedelta(weeks=w, days=k % 7)
            pid, cid = f"{state.lower()}-{k // 7}", f"{state.lower()}-w{w}-{k}"
            when = f"{day.isoformat()}T09:00:00+00:00"
            entries.append({"fullUrl": f"urn:uuid:e-{cid}", "resource": {
                "resourceType": "Encounter", "id": f"e-{cid}", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"urn:uuid:{pid}"}, "period": {"start": when, "end": when}}})
            entries.append({"fullUrl": f"urn:uuid:c-{cid}", "resource": {
                "resourceType": "Condition", "id": f"c-{cid}", "subject": {"reference": f"urn:uuid:{pid}"},
                "encounter": {"reference": f"urn:uuid:e-{cid}"}, "onsetDateTime": when,
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]}}})
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def normalized_store(root: Path, weekly: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """A Parquet store of ``bundle``s normalized without a server ({region: [WEEKS] cases}, one commit per
    region), and the graph file of ``EDGES``: (store path, graph path) under ``root``."""
    from healthai.normalize.fhir import normalize_fhir
    from healthai.store import ParquetStore
    from tests.ingest.conftest import context

    store = ParquetStore(str(root / "store")).open()
    for region, cases in weekly.items():
        out = normalize_fhir(bundle(region, range(WEEKS), cases), ctx=context(), source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    store.close()
    graph = root / "graph.csv"
    with graph.open("w", newline="") as f:
        csv.writer(f).writerows([("source", "target"), *EDGES])
    return root / "store", graph


class Server:
    """Ingest + serving in one process (the app's own plugins), on a loop in a background thread."""

    def __init__(self, store: Path, repo: Path) -> None:
        serving = ServingSettings(model_repository=repo, reload_poll_s=0.0)
        self.settings = Settings(port=0, dev_mode=True, store_uri=str(store), serving=serving)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # what healthai.app.main.build_plugins assembles (called directly: once the submodule
        # healthai.serving.plugin is imported, the package attribute `plugin` names the module)
        ingest = IngestPlugin(self.settings)
        self.plugins = [ingest, serving_plugin(settings=self.settings, surveillance=ingest.surveillance)]
        self.running = self.run(self._start())
        self.address = f"127.0.0.1:{self.running.port}"

    async def _start(self):
        running = build_server(self.settings, self.plugins)
        await running.start()
        return running

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def poll(self) -> None:
        """One repository scan (what the reload watcher does every reload_poll_s)."""
        self.run(self.plugins[1].manager.poll_once())

    def close(self) -> None:
        self.run(self.running.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def train(store: Path, graph: Path, repo: Path, runs: Path, *, new_version: bool, capsys) -> dict:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    argv = ["train", "forecast", "--from-store", str(store), "--syndrome", "ili", "--graph", str(graph),
            "--epochs", "2", "--hidden", "8", "--variants", "custom", "--runs-dir", str(runs),
            "--export-to", str(repo), "--model-name", "forecast_loop"]
    args = parser.parse_args(argv + (["--new-version"] if new_version else []))
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def ingest(client: Client, weeks: range, cases: np.ndarray) -> int:
    stored = 0
    for j, region in enumerate(REGIONS.values()):
        result = client.ingest_fhir(bundle(region, weeks, cases[:, j]), outcome_detail="issues")
        stored += sum(1 for s in result.statuses if s == "accepted")
    return stored


def test_ingest_to_forecast_from_the_new_version(tmp_path: Path, capsys) -> None:
    cases = weekly_cases()
    store, repo, runs = tmp_path / "store", tmp_path / "models", tmp_path / "runs"
    graph = tmp_path / "graph.csv"
    with graph.open("w", newline="") as f:
        csv.writer(f).writerows([("source", "target"), *EDGES])
    repo.mkdir()
    server = Server(store, repo)
    try:
        with Client(server.address) as client:
            assert ingest(client, range(FIRST_ROUND), cases) > 0
            first = train(store, graph, repo, runs, new_version=False, capsys=capsys)
            assert first["published"]["version"] == 1
            server.poll()
            before = client.forecast(model="forecast_loop", stored=True)
            assert before.model_version == 1
            last_week = FIRST_MONDAY + dt.timedelta(weeks=FIRST_ROUND)
            assert before.first_forecast_period == last_week.isoformat()

            ingest(client, range(FIRST_ROUND, WEEKS), cases)  # ten more weeks arrive
            second = train(store, graph, repo, runs, new_version=True, capsys=capsys)
            assert second["published"]["version"] == 2
            server.poll()
            after = client.forecast(model="forecast_loop", stored=True)
    finally:
        server.close()
    assert after.model_version == 2
    assert after.first_forecast_period == (FIRST_MONDAY + dt.timedelta(weeks=WEEKS)).isoformat()
    order = [list(REGIONS.values()).index(r) for r in after.region_ids]
    np.testing.assert_array_equal(after.history, cases[-after.history.shape[0]:, order])  # stored = sent
    assert all(c["covered_periods"] == c["window_periods"] for c in after.coverage)
    assert np.all(np.isfinite(after.quantiles)) and np.all(np.diff(after.quantiles, axis=-1) >= 0)
    card = json.loads((repo / "forecast_loop/2/model_card.json").read_text())
    assert card["version"] == 2 and card["data"]["store"]["syndrome"] == "ili"
    assert card["data"]["periods"] == WEEKS and card["step"] == "W"
    # the default is the stack (ST-GNN + seasonal baselines) with its own point forecast output
    assert card["stack"]["members"][:2] == ["healthai", "last_value"]
    assert card["stack"]["rolling_origins"] == [104]
    assert [o["name"] for o in card["outputs"]] == ["forecast", "point"]
    rows = write_hubverse(after, tmp_path / "hub.csv")
    with (tmp_path / "hub.csv").open(newline="") as f:
        hub = list(csv.DictReader(f))
    assert rows == len(hub) == len(after.region_ids) * len(after.horizons) * len(after.quantile_levels)
    reference = (FIRST_MONDAY + dt.timedelta(weeks=WEEKS - 1, days=6)).isoformat()  # weeks by their end
    assert {r["reference_date"] for r in hub} == {reference}
    h2 = next(r for r in hub if r["horizon"] == "2" and r["location"] == "US-MA")
    assert h2["target_end_date"] == (FIRST_MONDAY + dt.timedelta(weeks=WEEKS + 1, days=6)).isoformat()
    assert h2["output_type"] == "quantile"
    plot_forecast(after, tmp_path / "fan.png")
    assert (tmp_path / "fan.png").read_bytes()[:4] == b"\x89PNG"
