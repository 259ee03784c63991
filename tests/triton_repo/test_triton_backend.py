"""The Triton-backed runtime (``healthai.serving.runtime.triton.TritonModel``) against this project's
own KServe v2 endpoint standing in for Triton: a real ``healthai serve`` subprocess (in-process ONNX
Runtime) serving a repository prepared by ``healthai triton prepare``. Results must equal the
in-process runtime's, through the runtime contract and through the real Risk/Forecast RPCs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import free_port
from tritonclient.grpc import model_config_pb2

import healthai.serving.runtime.manager as manager_module
from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread, start_server_process, stop_server_process
from healthai.errors import HealthAIError, InvalidInput, NotReady
from healthai.serving.plugin import plugin
from healthai.serving.risk.card import parse_risk_card
from healthai.serving.risk.task import RiskTask
from healthai.serving.runtime.contract import InferRequest
from healthai.serving.runtime.onnx import OnnxModel
from healthai.serving.runtime.repository import RepositoryError, VersionDir, read_config, scan_versions
from healthai.serving.runtime.triton import TritonModel, TritonNotReachable
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, ServingSettings, newest_version_dir
from healthai.triton import prepare_repository
from healthai_client import Client


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    prepare_repository(DEFAULT_MODEL_REPOSITORY, out)
    return without_domains(out)


def without_domains(repo: Path) -> Path:
    """Triton runs models without reading our cards' feature domains or imputation (the healthai
    servicers in front apply them); a healthai stand-in for Triton must not apply them either: its KServe
    endpoint would refuse the backend's zero-filled warm-up and these tests' random patients, and derive
    missing flags the in-process model is given as they are."""
    for card_path in repo.glob("risk_*/*/model_card.json"):
        card = json.loads(card_path.read_text())
        card.pop("domains", None)
        card.pop("imputation", None)
        for feature in card["features"]:
            feature.pop("domain", None)
        card_path.write_text(json.dumps(card))
    return repo


@pytest.fixture(scope="module")
def triton_url(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``healthai serve`` process whose KServe v2 endpoint stands in for Triton."""
    env = {"HEALTHAI_SERVING__MODEL_REPOSITORY": str(repo), "HEALTHAI_SERVING__RELOAD_POLL_S": "0"}
    store = tmp_path_factory.mktemp("standin-store")
    proc, port = start_server_process(["--dev", "--store-uri", str(store), "--log-level", "WARNING"], env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        assert stop_server_process(proc) == 0


def version_dir(repo: Path, name: str) -> tuple[VersionDir, model_config_pb2.ModelConfig]:
    versions = scan_versions(repo / name)
    return versions[max(versions)], read_config(repo / name)


@pytest.fixture
def pair(repo: Path, triton_url: str,
         request: pytest.FixtureRequest) -> Iterator[tuple[OnnxModel, TritonModel]]:
    """(in-process runtime, Triton-backed runtime) of the model named by the test's parameter."""
    vdir, config = version_dir(repo, request.param)
    local = OnnxModel(vdir, config, use_cuda=False)
    remote = TritonModel(vdir, config, url=triton_url, timeout_s=20)
    local.load()
    remote.load()
    remote.warm()
    yield local, remote
    remote.unload()
    local.unload()


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].shape == want[key].shape, key
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("pair", ["risk_readmission"], indirect=True)
def test_risk_batch_with_top_features_equals_in_process(pair: tuple[OnnxModel, TritonModel]) -> None:
    local, remote = pair
    card = parse_risk_card(json.loads((remote.dir.path / "model_card.json").read_text()),
                           n_inputs=remote.inputs[0].dims[0], where="test")
    task = RiskTask(card)
    rng = np.random.default_rng(7)
    f = card.n_features
    # 100 patients x (55 + 1) occlusion rows = 5,600 rows: over max_batch_size 4096, sent in chunks
    batch = [task.request(rng.normal(size=(n, f)).astype(np.float32), k)
             for n, k in ((1, 3), (4, 0), (100, 3), (2, 5))]
    want, got = local.execute(batch), remote.execute(batch)
    assert len(got) == len(batch)
    for g, w in zip(got, want, strict=True):
        assert not isinstance(g, HealthAIError), g
        assert_same(g, w)
    assert remote.max_rows == 4096


@pytest.mark.parametrize("pair", ["forecast_japan"], indirect=True)
def test_forecast_equals_in_process(pair: tuple[OnnxModel, TritonModel]) -> None:
    local, remote = pair
    steps, regions = remote.inputs[0].dims
    rng = np.random.default_rng(3)
    batch = [InferRequest({"history": rng.poisson(20, size=(1, steps, regions)).astype(np.float32)},
                          outputs=("forecast",)) for _ in range(3)]
    want, got = local.execute(batch), remote.execute(batch)
    for g, w in zip(got, want, strict=True):
        assert not isinstance(g, HealthAIError), g
        assert_same(g, w)


@pytest.mark.parametrize("pair", ["risk_heart"], indirect=True)
def test_one_bad_request_fails_alone(pair: tuple[OnnxModel, TritonModel]) -> None:
    local, remote = pair
    good = np.ones((2, 16), np.float32)
    bad = good.copy()
    bad[1, 4] = np.nan
    batch = [InferRequest({"features": good}), InferRequest({"features": bad}),
             InferRequest({"features": good * 2})]
    got = remote.execute(batch)
    assert isinstance(got[1], InvalidInput)
    assert "non-finite value nan at index [1, 4]" in got[1].message
    want = local.execute([batch[0], batch[2]])
    assert_same(got[0], want[0])
    assert_same(got[2], want[1])
    remote.unload()
    after = remote.execute(batch[:1])
    assert isinstance(after[0], NotReady) and not remote.is_ready()


def test_model_missing_on_triton_is_refused(repo: Path, triton_url: str) -> None:
    vdir, config = version_dir(repo, "risk_heart")
    missing = VersionDir(vdir.model, 9, vdir.path, vdir.fingerprint)
    with pytest.raises(TritonNotReachable, match=r"model 'risk_heart' version 9 is not ready there"):
        TritonModel(missing, config, url=triton_url, ready_wait_s=0.5).load()


def test_config_disagreeing_with_triton_is_refused(repo: Path, triton_url: str) -> None:
    vdir, config = version_dir(repo, "risk_heart")
    config.input[0].dims[:] = [17]
    wrong = r"input 'features' is FP32 \[16\] there but FP32 \[17\]"
    with pytest.raises(RepositoryError, match=wrong) as info:
        TritonModel(vdir, config, url=triton_url).load()
    assert not isinstance(info.value, TritonNotReachable)  # incompatible: not worth retrying


def test_unreachable_triton_is_refused(repo: Path) -> None:
    vdir, config = version_dir(repo, "risk_heart")
    with pytest.raises(TritonNotReachable, match=r"Triton at 127\.0\.0\.1:\d+: model 'risk_heart'"):
        TritonModel(vdir, config, url=f"127.0.0.1:{free_port()}", timeout_s=2).load()


def test_rpcs_served_through_triton_backend_equal_in_process(
        repo: Path, triton_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server whose manager builds TritonModel runtimes answers Risk.Score and Forecast exactly
    like the in-process server it delegates to."""
    serving_settings = ServingSettings(model_repository=repo, reload_poll_s=0)
    if "backend" in ServingSettings.model_fields:  # the setting (see deploy/README.md, Triton)
        serving_settings = serving_settings.model_copy(update={"backend": "triton", "triton_url": triton_url})
    else:  # until the manager reads it: have the manager build TritonModel where it builds OnnxModel
        def triton_runtime(vdir: VersionDir, config: model_config_pb2.ModelConfig,
                           **_: object) -> TritonModel:
            return TritonModel(vdir, config, url=triton_url, timeout_s=20)

        monkeypatch.setattr(manager_module, "OnnxModel", triton_runtime)
    settings = Settings(port=0, dev_mode=True, store_uri=str(tmp_path / "store"), log_level="WARNING",
                        serving=serving_settings)
    card = json.loads((newest_version_dir("risk_readmission", repo) / "model_card.json").read_text())
    regions = json.loads((repo / "forecast_japan" / "1" / "graph.json").read_text())["region_ids"]
    rng = np.random.default_rng(11)
    patients = [rng.normal(size=(n, len(card["features"]))).astype(np.float32) for n in (1, 1, 3, 1, 250, 1)]
    history = rng.poisson(30, size=(120, len(regions))).astype(np.float32)  # >= the 106-period window
    serving = plugin(settings=settings)
    with serve_in_thread(settings, [serving]) as running:
        names = serving.manager.model_names()
        assert names == ["forecast_japan", "forecast_us_states", "risk_heart", "risk_readmission"]
        runtimes = [v.runtime for n in names for v in serving.manager.ready_versions(n)]
        assert all(isinstance(r, TritonModel) for r in runtimes)
        with Client(f"127.0.0.1:{running.port}") as via_triton, Client(triton_url) as direct:
            with ThreadPoolExecutor(6) as pool:  # concurrent calls: the scheduler batches them
                got = list(pool.map(lambda x: via_triton.score("risk_readmission", x, top_features=3),
                                    patients))
            want = [direct.score("risk_readmission", x, top_features=3) for x in patients]
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g.probabilities, w.probabilities, rtol=1e-6)
                assert [p.risk_band for p in g.patients] == [p.risk_band for p in w.patients]
                assert [[n for n, _ in p.top_features] for p in g.patients] == \
                       [[n for n, _ in p.top_features] for p in w.patients]
            f_got = via_triton.forecast("japan", history=(regions, history), quantile_levels=[0.1, 0.5, 0.9])
            f_want = direct.forecast("japan", history=(regions, history), quantile_levels=[0.1, 0.5, 0.9])
            np.testing.assert_allclose(f_got.point, f_want.point, rtol=1e-6)
            np.testing.assert_allclose(f_got.quantiles, f_want.quantiles, rtol=1e-6)
            assert (f_got.model_name, f_got.model_version) == (f_want.model_name, f_want.model_version)



@pytest.fixture
def small_triton(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A stand-in serving only risk_heart, polling its repository every 0.2 s (like Triton's poll mode)."""
    src = tmp_path / "src"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "risk_heart", src / "risk_heart")
    repo = tmp_path / "models"
    prepare_repository(src, repo)
    without_domains(repo)
    env = {"HEALTHAI_SERVING__MODEL_REPOSITORY": str(repo), "HEALTHAI_SERVING__RELOAD_POLL_S": "0.2"}
    proc, port = start_server_process(["--dev", "--store-uri", str(tmp_path / "store"), "--log-level",
                                       "WARNING"], env, stderr=subprocess.DEVNULL)
    try:
        yield proc, f"127.0.0.1:{port}", repo
    finally:
        if proc.poll() is None:
            stop_server_process(proc)


def test_load_waits_for_a_version_triton_has_not_loaded_yet(
        small_triton: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    _, url, repo = small_triton
    vdir, config = version_dir(repo, "risk_heart")
    later = vdir.version + 1
    new = VersionDir(vdir.model, later, repo / "risk_heart" / str(later), vdir.fingerprint)
    remote = TritonModel(new, config, url=url, timeout_s=5, ready_wait_s=20)
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(remote.load)
        shutil.copytree(vdir.path, new.path)  # the new version lands while load() is waiting for it
        loading.result(30)
    got = remote.execute([InferRequest({"features": np.ones((2, 16), np.float32)})])[0]
    assert not isinstance(got, HealthAIError) and got["probability"].shape == (2, 1)
    remote.unload()


def test_triton_going_away_fails_each_request_unavailable(
        small_triton: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    """A loaded runtime whose Triton dies: every request gets UNAVAILABLE (the SDK retries those)."""
    proc, url, repo = small_triton
    vdir, config = version_dir(repo, "risk_heart")
    remote = TritonModel(vdir, config, url=url, timeout_s=5)
    remote.load()
    batch = [InferRequest({"features": np.ones((n, 16), np.float32)}) for n in (1, 3)]
    assert [r["probability"].shape for r in remote.execute(batch)] == [(1, 1), (3, 1)]  # type: ignore[index]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    got = remote.execute(batch)
    assert all(isinstance(r, NotReady) and r.code == grpc.StatusCode.UNAVAILABLE for r in got), got
    assert f"Triton at {url}" in got[0].message  # type: ignore[union-attr]
    remote.unload()
