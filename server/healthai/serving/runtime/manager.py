"""The live model set: loads every version in the repository, serves the newest unless one is pinned,
and hot-reloads — a new or changed version is loaded and warmed off the event loop, then swapped in;
requests already queued on the old one finish there. A version that fails to load or to pass its
inspections is refused with one log line and whatever served before keeps serving.

Explicit control, with Triton's semantics (KServe RepositoryModelLoad / RepositoryModelUnload):
``load_model`` (re)loads every selected version of a model from the repository, changed or not, and
swaps each in once warm (a version that fails keeps its previous load serving, and the call fails);
``unload_model`` stops serving a model at once — requests already queued or running on it finish
there. An explicitly unloaded model stays unloaded: repository scans skip it, whatever changes on
disk, until ``load_model`` names it again (or the server restarts, which loads the whole repository).

A repository folder that does not exist refuses start-up (``InvalidInput`` naming
``serving.model_repository``); an existing empty one starts with no model and loads what appears.
Served versions are reported as ``healthai_model_version_loaded{model,version}``. A refusal is logged
once per distinct content of what was refused (the version's files, or the model's config.pbtxt); a call
for a refused version gets FAILED_PRECONDITION (not UNAVAILABLE: retrying cannot help until the files
change) with the reason, its paths cut to the repository's. A card whose ``version`` is not its folder's
number is served as the folder's number with a warning. A negative ``model_version`` is INVALID_ARGUMENT
(0 is the newest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2

from healthai.errors import FailedPrecondition, InvalidInput, NotFound, NotReady
from healthai.observability import metrics
from healthai.serving.runtime.onnx import OnnxModel
from healthai.serving.runtime.repository import (
    RepositoryError,
    VersionDir,
    config_fingerprint,
    read_config,
    scan_models,
    scan_versions,
)
from healthai.serving.runtime.scheduler import Scheduler
from healthai.serving.runtime.triton import TritonModel, TritonNotReachable
from healthai.serving.settings import ServingSettings

log = logging.getLogger(__name__)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():;,]+/)*([^\s/'\"():;,]+)")  # -> its file name


@dataclass(eq=False)
class LoadedVersion:
    """A ready model version: its runtime, its scheduler, its card, and what inspectors derived."""

    runtime: OnnxModel | TritonModel
    scheduler: Scheduler
    card: dict[str, Any]
    fingerprint: tuple[tuple[str, int, int], ...]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def version(self) -> int:
        return self.runtime.version


# An inspector checks a freshly loaded version (raises RepositoryError to refuse it) and may store
# what it derived (e.g. a parsed model card) in ``loaded.extras``.
Inspector = Callable[[LoadedVersion], None]


@dataclass
class IndexEntry:
    name: str
    version: int
    state: str  # READY | UNAVAILABLE
    reason: str = ""


def _selected_versions(config: model_config_pb2.ModelConfig, found: list[int]) -> list[int]:
    """Triton's version_policy; without one every version found is served (newest by default)."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "latest":
        return sorted(found)[-max(policy.latest.num_versions, 1):]
    if which == "specific":
        return [v for v in found if v in set(policy.specific.versions)]
    return sorted(found)


class ModelManager:
    def __init__(self, settings: ServingSettings, *, inspectors: list[Inspector] | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.model_repository)
        self.inspectors = list(inspectors or [])
        self._loaded: dict[str, dict[int, LoadedVersion]] = {}
        self._refused: dict[tuple[str, int], tuple[tuple[Any, ...], str]] = {}
        self._unloaded: dict[str, list[int]] = {}  # explicitly unloaded -> the versions it served
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._scan_lock = asyncio.Lock()
        self._root_missing = False  # the repository folder vanished after start (warned once)
        self.started = False
        # called (on the event loop) after every scan, load and unload: e.g. to set services' health
        self.on_change: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the repository; InvalidInput when its folder does not exist (a typo, a volume not
        mounted): a server that reports ready while serving nothing would only fail every call."""
        if not await asyncio.to_thread(self.root.is_dir):
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise InvalidInput(
                "serving.model_repository (--model-repository, HEALTHAI_SERVING__MODEL_REPOSITORY): "
                f"{self.root} {what}; point it at a model repository (an empty directory is fine: models "
                "are loaded as they appear), or run without serving (--no-serving)",
                field="serving.model_repository")
        await self.poll_once()
        self.started = True
        if self.settings.reload_poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        self.started = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for versions in self._loaded.values():
            for loaded in versions.values():
                _report_loaded(loaded, False)
                await self._retire(loaded)
        self._loaded.clear()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            try:
                await self.poll_once()
            except Exception:  # never let the watcher die: log and keep polling
                log.exception("model repository scan failed")

    # -- lookup ---------------------------------------------------------------------------------
    def resolve(self, name: str, version: int = 0) -> LoadedVersion:
        """The pinned version, or the newest ready one (``version`` 0). InvalidInput for a negative
        version; NotFound; FailedPrecondition for a version refused at load (its files must change:
        retrying does not help); NotReady (UNAVAILABLE, retried by clients) while one may still come."""
        if version < 0:
            raise InvalidInput(f"model_version: {version} is not a version; give 0 (or leave it out) for the "
                               "newest, or a version number", field="model_version")
        versions = self._loaded.get(name)
        if not versions:
            if name in self._unloaded:
                raise NotReady(f"model {name!r} was unloaded (RepositoryModelUnload); "
                               "RepositoryModelLoad serves it again")
            refused = sorted(k for k in self._refused if k[0] == name)
            if refused:
                raise self._refusal(refused, f"model {name!r} has no loadable version")
            if not self.started:
                raise NotReady(f"model {name!r} is not loaded yet; the server is starting")
            raise NotFound(f"model {name!r} is not in the model repository (have {sorted(self._loaded)})")
        if version == 0:
            return versions[max(versions)]
        if version not in versions:
            if (name, version) in self._refused:
                raise self._refusal([(name, version)], f"model {name!r} version {version} is not served")
            raise NotFound(f"model {name!r} has no version {version} (have {sorted(versions)})")
        return versions[version]

    def _refusal(self, keys: list[tuple[str, int]], what: str) -> FailedPrecondition | NotReady:
        """Why ``keys`` are not served, for the caller: FailedPrecondition when their files were refused
        at load (until they change), NotReady when one waits on something that may come back (Triton
        not reachable: retried on every scan). Repository paths are cut to the model's folder; the
        server log has the full reason (``_refuse``)."""
        reasons = "; ".join(self._public_reason(self._refused[k][1]) for k in keys)
        if all(self._refused[k][0] for k in keys):
            return FailedPrecondition(f"{what}: refused at load ({reasons}); fix its files in the model "
                                      "repository (the next scan or RepositoryModelLoad loads them)")
        return NotReady(f"{what}: not ready ({reasons})")

    def _public_reason(self, reason: str) -> str:
        """``reason`` without server paths: repository paths relative to the repository, any other
        absolute path cut to its file name."""
        root = str(self.root.resolve()) if self.root.is_absolute() else str(self.root)
        for prefix in dict.fromkeys((str(self.root), root)):
            reason = reason.replace(prefix.rstrip("/") + "/", "")
        return _ABSOLUTE_PATH.sub(lambda m: m.group(1), reason)

    def model_names(self) -> list[str]:
        return sorted(self._loaded)

    def ready_versions(self, name: str) -> list[LoadedVersion]:
        return [self._loaded[name][v] for v in sorted(self._loaded.get(name, {}))]

    def index(self) -> list[IndexEntry]:
        entries = [IndexEntry(n, v, "READY", self._kept_reason(n, v))
                   for n, vs in self._loaded.items() for v in vs]
        entries += [IndexEntry(n, v, "UNAVAILABLE", reason) for (n, v), (_, reason) in self._refused.items()
                    if v not in self._loaded.get(n, {})]
        entries += [IndexEntry(n, v, "UNAVAILABLE", "unloaded")
                    for n, vs in self._unloaded.items() for v in vs]
        return sorted(entries, key=lambda e: (e.name, e.version))

    def _kept_reason(self, name: str, version: int) -> str:
        """Why a READY version serves an earlier load: its folder changed and the change was refused."""
        refused = self._refused.get((name, version))
        if refused is None:
            return ""
        return f"serving its previous load; the changed files were refused: {refused[1]}"

    # -- reload ---------------------------------------------------------------------------------
    async def poll_once(self) -> None:
        """One scan of the repository: load new/changed versions, retire removed ones."""
        async with self._scan_lock:
            try:
                models = await asyncio.to_thread(scan_models, self.root)
                self._check_root(models)
                for name, model_dir in models.items():
                    if name not in self._unloaded:  # explicitly unloaded: only load_model brings it back
                        await self._sync_model(name, model_dir)
                for name in [n for n in self._loaded if n not in models]:
                    log.info("model %s removed from the repository; unloading", name)
                    for loaded in self._loaded.pop(name).values():
                        self._retire_later(loaded, gone=True)
            finally:
                self._notify()

    async def load_model(self, name: str) -> None:
        """(Re)load every selected version of ``name`` from the repository, even unchanged ones, and
        serve it again if it was unloaded. NotFound when the repository has no such model;
        FailedPrecondition naming the reason when a version could not be loaded (a version that
        served before keeps serving)."""
        async with self._scan_lock:
            models = await asyncio.to_thread(scan_models, self.root)
            if name not in models:
                raise NotFound(f"model {name!r} is not in the model repository (it has {sorted(models)})")
            self._unloaded.pop(name, None)
            try:
                failures = await self._sync_model(name, models[name], force=True)
            finally:
                self._notify()
        log.info("model %s loaded by request: version(s) %s ready", name,
                 sorted(self._loaded.get(name, {})) or "none")
        if failures:
            raise FailedPrecondition(f"model {name!r}: " + "; ".join(failures))

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name`` now; queued and running requests finish on it. Repository scans
        leave it unloaded until ``load_model``. NotFound when it is neither served nor in the
        repository."""
        async with self._scan_lock:
            versions = self._loaded.pop(name, {})
            refused = [key for key in self._refused if key[0] == name]
            if not versions and not refused and name not in self._unloaded \
                    and name not in await asyncio.to_thread(scan_models, self.root):
                raise NotFound(f"model {name!r} is not loaded and not in the model repository")
            for key in refused:
                del self._refused[key]
            self._unloaded[name] = sorted({*self._unloaded.get(name, []), *versions})
            for loaded in versions.values():
                self._retire_later(loaded, gone=True)
            self._notify()
        log.info("model %s unloaded by request (version(s) %s); in-flight requests finish on it; "
                 "repository scans leave it unloaded until it is loaded again", name,
                 sorted(versions) or "none")

    def _notify(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a listener's bug must not fail a scan
                log.exception("model manager on_change listener failed")

    async def _sync_model(self, name: str, model_dir: Path, *, force: bool = False) -> list[str]:
        """Bring one model in line with its directory; ``force`` reloads unchanged versions too.
        Returns why versions (or the model's config) were refused in this pass."""
        try:
            found = await asyncio.to_thread(scan_versions, model_dir)
            config = await asyncio.to_thread(read_config, model_dir)
        except (RepositoryError, OSError) as exc:
            # fingerprinted by config.pbtxt: logged once per content, retried on every scan
            self._refuse(name, 0, await asyncio.to_thread(config_fingerprint, model_dir), str(exc))
            return [str(exc)]
        self._refused.pop((name, 0), None)
        failures: list[str] = []
        current = self._loaded.setdefault(name, {})
        wanted = _selected_versions(config, list(found))
        for version in wanted:
            vdir = found[version]
            have = current.get(version)
            if not force and have is not None and have.fingerprint == vdir.fingerprint:
                continue
            refused = self._refused.get((name, version))
            if not force and refused is not None and refused[0] == vdir.fingerprint:
                continue  # unchanged since we refused it
            loaded = await self._load(vdir, config)
            if loaded is None:
                failures.append(f"version {version}: {self._refused[(name, version)][1]}")
                continue
            current[version] = loaded  # the swap: new requests resolve to the new runtime from here
            _report_loaded(loaded, True)
            if have is not None:
                self._retire_later(have)
            log.info("model %s version %d ready (%s)%s", name, version, loaded.runtime.model_file.name,
                     " — replaced the previous load" if have is not None else "")
        for version in [v for v in current if v not in wanted]:
            log.info("model %s version %d removed; unloading after in-flight requests", name, version)
            self._retire_later(current.pop(version), gone=True)
        for key in [k for k in self._refused if k[0] == name and k[1] not in found and k[1] != 0]:
            del self._refused[key]
        if not current:
            del self._loaded[name]
        if force and not wanted:
            failures.append(f"no version to serve in {model_dir}")
        return failures

    async def _load(self, vdir: VersionDir, config: model_config_pb2.ModelConfig) -> LoadedVersion | None:
        runtime = self._runtime(vdir, config)

        def load_and_warm() -> dict[str, Any]:
            runtime.load()
            runtime.warm()
            return vdir.card()

        try:
            card = await asyncio.to_thread(load_and_warm)
            scheduler = Scheduler(runtime, max_queue=self.settings.max_queue_requests,
                                  batching=self.settings.dynamic_batching,
                                  instances=self._instances(config),
                                  inline_max_us=self.settings.inline_execute_max_us,
                                  busy_window_us=self.settings.busy_batch_window_us,
                                  idle_grace_us=self.settings.busy_batch_idle_grace_us)
            loaded = LoadedVersion(runtime, scheduler, card, vdir.fingerprint)
            try:
                for inspect in self.inspectors:
                    inspect(loaded)
            except RepositoryError:
                await scheduler.close()
                raise
        except RepositoryError as exc:
            runtime.unload()
            # Triton unreachable or not ready yet: no fingerprint, so the next scan tries again
            fingerprint = () if isinstance(exc, TritonNotReachable) else vdir.fingerprint
            self._refuse(vdir.model, vdir.version, fingerprint, str(exc))
            return None
        self._refused.pop((vdir.model, vdir.version), None)
        _warn_card_version(vdir, card)
        return loaded

    def _runtime(self, vdir: VersionDir, config: model_config_pb2.ModelConfig) -> OnnxModel | TritonModel:
        if self.settings.backend == "triton":
            return TritonModel(vdir, config, url=self.settings.triton_url,
                               timeout_s=self.settings.triton_timeout_s)
        return OnnxModel(vdir, config, intra_op_threads=self.settings.intra_op_threads,
                         use_cuda=self.settings.use_cuda)

    def _instances(self, config: model_config_pb2.ModelConfig) -> int:
        """Worker threads of a version's scheduler: Triton's remote calls overlap, ORT's use cores."""
        if self.settings.backend == "triton":
            return self.settings.triton_max_inflight
        return _instances(config)

    def _refuse(self, name: str, version: int, fingerprint: tuple[Any, ...], reason: str) -> None:
        """Record a refusal; log it unless the same files were refused for the same reason before
        (an empty fingerprint — Triton not reachable — is logged every time)."""
        serving = sorted(self._loaded.get(name, {}))
        again = bool(fingerprint) and self._refused.get((name, version)) == (fingerprint, reason)
        log.log(logging.DEBUG if again else logging.ERROR, "model %s version %s REFUSED: %s — %s", name,
                version or "(all)", reason,
                f"still serving version(s) {serving}" if serving else "no version of it is served")
        self._refused[(name, version)] = (fingerprint, reason)

    def _check_root(self, models: dict[str, Path]) -> None:
        """Warn once when the repository folder disappears after start (its models are unloaded as
        removed), and once when it is back."""
        missing = not models and not self.root.is_dir()
        if missing and not self._root_missing:
            log.warning("model repository %s does not exist (any more); no models are served until it is "
                        "back", self.root)
        elif self._root_missing and not missing:
            log.info("model repository %s is back", self.root)
        self._root_missing = missing

    def _retire_later(self, loaded: LoadedVersion, *, gone: bool = False) -> None:
        """Close ``loaded`` once its queued requests finish; ``gone``: no load of that version serves
        any more (not a replacement by a newer load of it)."""
        if gone:
            _report_loaded(loaded, False)
        task = asyncio.get_running_loop().create_task(self._retire(loaded))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(loaded: LoadedVersion) -> None:
        await loaded.scheduler.close()  # drains queued + running requests first
        loaded.runtime.unload()


def _warn_card_version(vdir: VersionDir, card: dict[str, Any]) -> None:
    """A card whose ``version`` is not its folder's number was copied from another version, or its folder
    renamed: served as the folder's number, with a warning (once per load)."""
    stated = card.get("version")
    if stated is not None and str(stated) != str(vdir.version):
        log.warning("model %s version folder %d: its model_card.json says version %s; serving it as "
                    "version %d (the folder's number)", vdir.model, vdir.version, stated, vdir.version)


def _instances(config: model_config_pb2.ModelConfig) -> int:
    return max(sum(g.count for g in config.instance_group), 1)


def _report_loaded(loaded: LoadedVersion, serving: bool) -> None:
    """healthai_model_version_loaded; a name that cannot be a label value is not reported."""
    try:
        metrics.set_model_loaded(loaded.name, loaded.version, serving)
    except ValueError:
        log.debug("model %r: not reported in healthai_model_version_loaded (not a label value)", loaded.name)
