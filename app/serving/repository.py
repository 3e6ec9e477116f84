"""The model repository: the bundles a service can serve, which one is active, and the switch.

``model_store/`` holds one bundle per folder (``model_store/<folder>/manifest.json``); each
bundle is a *version*, named by its manifest's ``model_version`` (unique in the store). The
bundle the service is configured with (``ECGFM_BUNDLE_DIR``) belongs to it too, wherever it
lies. :func:`discover_bundles` lists them without loading any graph (a damaged or unreadable
bundle is listed with its problem, never hidden).

A :class:`ModelRepository` holds the *loaded* versions: the active one, those it is told to
keep loaded (``keep_loaded``) and, for a moment after a switch, the one being retired.
Requests take a lease (``with repo.lease(version) as model``) for as long as they use a
model, so a switch (:meth:`ModelRepository.switch_to`) can:

1. load the new version's sessions and warm them up (in a worker thread: the event loop keeps
   answering), via the ``load`` function the composition root gives (``app.service``);
2. switch atomically: requests arriving after this line get the new version, requests that
   already hold a lease keep the old one;
3. retire the old version in the background: wait until its last lease ends (at most
   ``drain_timeout_s``), stop it (its queued work finishes first), drop it, so memory returns
   to one model's worth.

Which version is active is stored in the database (``app.knowledge.model_state``), so every
worker process and replica follows a switch made on any of them: :meth:`follow` (run every
``ECGFM_MODEL_POLL_S`` seconds by the HTTP lifespan) compares and switches. Knows nothing of
HTTP, formats or torch; the loaded objects are whatever ``load`` returns (:class:`Servable`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from app.errors import BundleError, ModelNotLoaded, ModelUnusable, NotFound
from app.serving import bundle as B

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleEntry:
    """One bundle of the store, read from its manifest only (no graph loaded, no hash computed)."""

    version: str
    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why it cannot be served (unreadable manifest, duplicate version, ...)

    @property
    def source_checkpoint_sha256(self) -> str | None:
        source = self.manifest.get("source_checkpoint")
        return source.get("sha256") if isinstance(source, dict) else None

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get("untrained", False))


def _read_entry(root: Path) -> BundleEntry:
    try:
        manifest = json.loads((root / B.MANIFEST).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return BundleEntry(version=root.name, root=root, problem=f"its {B.MANIFEST} cannot be read ({exc})")
    if not isinstance(manifest, dict):
        return BundleEntry(version=root.name, root=root, problem=f"its {B.MANIFEST} is not a JSON object")
    version = manifest.get("model_version")
    if not isinstance(version, str) or not version:
        return BundleEntry(version=root.name, root=root, manifest=manifest,
                           problem=f"its {B.MANIFEST} names no model_version")
    return BundleEntry(version=version, root=root, manifest=manifest)


def discover_bundles(store_dir: Path, also: Sequence[Path] = ()) -> list[BundleEntry]:
    """Every bundle folder directly below ``store_dir`` and each of ``also``, by version.

    Two folders that claim the same version are both listed with a problem (neither can be
    served by that name: which one is meant would be a guess).
    """
    roots: list[Path] = []
    if store_dir.is_dir():
        roots = sorted(p for p in store_dir.iterdir() if p.is_dir() and (p / B.MANIFEST).is_file())
    for extra in also:
        if (extra / B.MANIFEST).is_file() and all(extra.resolve() != r.resolve() for r in roots):
            roots.append(extra)
    entries = [_read_entry(root) for root in roots]
    by_version: dict[str, list[BundleEntry]] = {}
    for entry in entries:
        by_version.setdefault(entry.version, []).append(entry)
    out: list[BundleEntry] = []
    for entry in entries:
        twins = by_version[entry.version]
        if len(twins) > 1 and entry.problem is None:
            others = ", ".join(str(t.root) for t in twins if t is not entry)
            entry = BundleEntry(entry.version, entry.root, entry.manifest,
                                problem=f"model_version {entry.version!r} is also claimed by {others}")
        out.append(entry)
    return sorted(out, key=lambda e: e.version)


class Servable(Protocol):
    """What ``load`` returns: a started-on-demand model (sessions loaded, warmed up)."""

    @property
    def version(self) -> str: ...

    def start(self) -> None: ...  # bind to the running event loop (the batcher)

    async def stop(self, *, timeout: float) -> None: ...  # finish queued work, then refuse more

    def close(self) -> None: ...  # release the sessions


M = TypeVar("M", bound=Servable)


class _Loaded(Generic[M]):
    """A loaded version and the leases held on it."""

    def __init__(self, model: M) -> None:
        self.model = model
        self.leases = 0
        self.retiring = False
        self.idle = threading.Event()
        self.idle.set()


@dataclass(frozen=True)
class Switch:
    """What a switch did (the answer of ``POST /models/{version}/activate``)."""

    active: str
    previous: str | None
    switched: bool  # False: it was the active version already
    load_s: float


class ModelRepository(Generic[M]):
    """Loaded versions, leases and the atomic switch (see the module docstring)."""

    def __init__(self, *, store_dir: Path, default_bundle: Path, load: Callable[[BundleEntry], M],
                 keep_loaded: Sequence[str] = (), drain_timeout_s: float = 30.0) -> None:
        self.store_dir = store_dir
        self.default_bundle = default_bundle
        self._load = load
        self.keep_loaded = tuple(keep_loaded)
        self.drain_timeout_s = drain_timeout_s
        self._loaded: dict[str, _Loaded[M]] = {}
        self._active: str | None = None
        self._lock = threading.Lock()  # _loaded, _active and the lease counts
        self._switching = asyncio.Lock()  # one switch at a time (bound to the loop of its first use)
        self._retirements: set[asyncio.Task[None]] = set()
        self.switched_at: float | None = None  # time.time() of the last switch in this process

    # --- what exists ----------------------------------------------------------------------

    def entries(self) -> list[BundleEntry]:
        return discover_bundles(self.store_dir, [self.default_bundle])

    def entry(self, version: str) -> BundleEntry:
        """The bundle of ``version``; NotFound (listing the versions there are) if none."""
        entries = self.entries()
        for entry in entries:
            if entry.version == version:
                if entry.problem is not None:
                    raise ModelUnusable(f"model version {version!r} ({entry.root}) cannot be served: {entry.problem}",
                                        details={"version": version})
                return entry
        known = [e.version for e in entries]
        raise NotFound(f"no model version {version!r} in the model store; there are: {', '.join(known) or 'none'}",
                       details={"version": version, "versions": known})

    def default_entry(self) -> BundleEntry:
        """The configured bundle (``ECGFM_BUNDLE_DIR``); BundleError with how-to text if absent."""
        B.open_bundle(self.default_bundle)  # the full check and its error message
        entry = _read_entry(self.default_bundle)
        if entry.problem is not None:
            raise BundleError(f"bundle {self.default_bundle}: {entry.problem}")
        return entry

    # --- what is loaded -------------------------------------------------------------------

    @property
    def active_version(self) -> str:
        if self._active is None:
            raise RuntimeError("the model repository has no active version yet (call load_initial)")
        return self._active

    @property
    def active(self) -> M:
        with self._lock:
            return self._loaded[self.active_version].model

    def loaded_versions(self) -> dict[str, str]:
        """version -> ``active`` / ``loaded`` / ``draining`` for every version in memory."""
        with self._lock:
            return {v: ("active" if v == self._active else "draining" if s.retiring else "loaded")
                    for v, s in self._loaded.items()}

    def load_initial(self, version: str | None) -> M:
        """Load (not start) the first active version: ``version`` if given, else the configured
        bundle; then the ``keep_loaded`` ones. Blocking: call it before serving."""
        entry = self.entry(version) if version is not None else self.default_entry()
        model = self._load(entry)
        with self._lock:
            self._loaded[entry.version] = _Loaded(model)
            self._active = entry.version
        for kept in self.keep_loaded:
            if kept not in self._loaded:
                self._loaded[kept] = _Loaded(self._load(self.entry(kept)))
        return model

    def adopt(self, model: M) -> None:
        """Make ``model`` (loaded by the caller) the first active version."""
        with self._lock:
            self._loaded[model.version] = _Loaded(model)
            self._active = model.version

    def all_loaded(self) -> list[M]:
        with self._lock:
            return [s.model for s in self._loaded.values()]

    @contextmanager
    def lease(self, version: str | None = None) -> Iterator[M]:
        """The active model (or the pinned ``version``, which must be loaded), held until the
        block ends: a switch never frees a model that a request still uses."""
        with self._lock:
            name = self._active if version is None else version
            slot = self._loaded.get(name) if name is not None else None
            if slot is None or (slot.retiring and version is not None):
                if version is not None:
                    self._refuse_pin(version)
                raise RuntimeError("the model repository has no active version")
            slot.leases += 1
            slot.idle.clear()
        try:
            yield slot.model
        finally:
            with self._lock:
                slot.leases -= 1
                if slot.leases == 0:
                    slot.idle.set()

    def _refuse_pin(self, version: str) -> None:
        loaded = sorted(self._loaded)
        if any(e.version == version for e in self.entries()):
            raise ModelNotLoaded(
                f"model version {version!r} is in the model store but not loaded in this service; pin one of "
                f"{', '.join(loaded)}, activate it (POST /models/{version}/activate) or list it in ECGFM_KEEP_LOADED",
                details={"version": version, "loaded": loaded})
        self.entry(version)  # raises NotFound naming the versions there are

    # --- switching --------------------------------------------------------------------------

    async def switch_to(self, version: str, *, before_switch: Callable[[], Awaitable[None]] | None = None) -> Switch:
        """Make ``version`` active (see the module docstring). ``before_switch`` runs after the
        new version is loaded and warm, before requests see it (the HTTP side records the switch
        in the database there: if that fails, nothing is switched and the new version is released)."""
        async with self._switching:
            previous = self._active
            if version == previous:
                if before_switch is not None:
                    await before_switch()
                return Switch(active=version, previous=previous, switched=False, load_s=0.0)
            entry = self.entry(version)
            started = time.perf_counter()
            with self._lock:
                slot = self._loaded.get(version)
                fresh = slot is None
                if slot is not None:
                    slot.retiring = False  # a version being retired comes back as it is
            if slot is None:
                try:
                    model = await asyncio.to_thread(self._load, entry)
                except BundleError as exc:
                    raise ModelUnusable(f"model version {version!r} cannot be loaded: {exc.message}",
                                        details={"version": version}) from exc
                model.start()
                slot = _Loaded(model)
            load_s = time.perf_counter() - started
            if before_switch is not None:
                try:
                    await before_switch()
                except BaseException:
                    if fresh:
                        await self._release(slot)
                    raise
            with self._lock:
                self._loaded[version] = slot
                self._active = version
                old = self._loaded.get(previous) if previous is not None else None
                if old is not None and previous not in self.keep_loaded:
                    old.retiring = True
                else:
                    old = None
            self.switched_at = time.time()
            log.info("model switched: %s -> %s (loaded and warmed up in %.1f s)", previous, version, load_s)
            if old is not None and previous is not None:
                task = asyncio.create_task(self._retire(previous, old))
                self._retirements.add(task)
                task.add_done_callback(self._retirements.discard)
            return Switch(active=version, previous=previous, switched=True, load_s=load_s)

    async def _retire(self, version: str, slot: _Loaded[M]) -> None:
        drained = await asyncio.to_thread(slot.idle.wait, self.drain_timeout_s)
        with self._lock:
            if not slot.retiring or self._loaded.get(version) is not slot:
                return  # switched back to it meanwhile
            del self._loaded[version]
        if not drained:
            log.warning("model %s: requests still held it %.0f s after the switch; released anyway", version,
                        self.drain_timeout_s)
        await self._release(slot)
        log.info("model %s released", version)

    async def _release(self, slot: _Loaded[M]) -> None:
        try:
            await slot.model.stop(timeout=self.drain_timeout_s)
        finally:
            slot.model.close()

    async def follow(self, recorded: str | None) -> Switch | None:
        """Switch to ``recorded`` (the active version the database holds) if it differs from this
        process's; None when there is nothing to do. A recorded version this store lacks or
        cannot load is logged (the current one keeps serving), never raised."""
        if recorded is None or recorded == self._active:
            return None
        try:
            return await self.switch_to(recorded)
        except (NotFound, ModelUnusable) as exc:
            log.error("the active model recorded in the database is %r, but this service cannot serve it (%s); "
                      "still serving %s", recorded, exc.message, self._active)
            return None

    async def close(self, *, timeout: float) -> None:
        """Stop and release every loaded version (at shutdown)."""
        for task in list(self._retirements):
            task.cancel()
        await asyncio.gather(*self._retirements, return_exceptions=True)
        with self._lock:
            slots = list(self._loaded.values())
            self._loaded.clear()
        for slot in slots:
            try:
                await slot.model.stop(timeout=timeout)
            finally:
                slot.model.close()

    def close_unstarted(self) -> None:
        """Release every loaded version's sessions without stopping it (never started, or already
        stopped by its owner: the offline scorer, error paths)."""
        with self._lock:
            slots = list(self._loaded.values())
            self._loaded.clear()
        for slot in slots:
            slot.model.close()
