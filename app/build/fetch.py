"""Download the ECGFM-KED checkpoint and the Bio_ClinicalBERT tokenizer files into a cache.

Layout of the cache directory::

    <cache>/checkpoints/<checkpoint file>            the verified checkpoint
    <cache>/checkpoints/<checkpoint file>.part       an interrupted download (resumed next time)
    <cache>/checkpoints/<checkpoint file>.verified.json   size, md5, sha256, source URL
    <cache>/text-model/config.json, vocab.txt, ...   tokenizer and config of the text model
    <cache>/text-model/.fetch-manifest.json          what was fetched from where (and sha256s)

Downloads go to ``<file>.part``; a restart asks the server for the rest with
``Range: bytes=<size>-`` and appends when it answers 206 (a 200 means it ignored the
range: the part is discarded and the download starts over). The file is moved into place
(``os.replace``, atomic on one filesystem) only after its size and md5 match what the
Zenodo record says. A complete, verified file is not downloaded again, and a complete
cache is reused without any network access.

Network failures become :class:`app.errors.FetchError` with a message that names the
host and says how to place the files by hand (``--checkpoint PATH --text-model DIR``).
Nothing here knows about HTTP routes or the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

if TYPE_CHECKING:
    from tqdm import tqdm

from app.errors import FetchError

ENV_CACHE_DIR = "ECGFM_CACHE_DIR"
ENV_ZENODO_URL = "ECGFM_ZENODO_URL"
ENV_HF_ENDPOINT = "ECGFM_HF_ENDPOINT"

DEFAULT_ZENODO_URL = "https://zenodo.org"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_RECORD_ID = "14881564"
DEFAULT_CHECKPOINT_NAME = "best_valid_all_increase_with_augment_epoch_3.pt"
DEFAULT_HF_REPO = "emilyalsentzer/Bio_ClinicalBERT"
DEFAULT_HF_REVISION = "main"
TEXT_MODEL_FILES: tuple[str, ...] = ("config.json", "vocab.txt")
OPTIONAL_TEXT_MODEL_FILES: tuple[str, ...] = ("tokenizer_config.json",)

CHECKPOINTS_SUBDIR = "checkpoints"
TEXT_MODEL_SUBDIR = "text-model"
TEXT_MODEL_MANIFEST = ".fetch-manifest.json"
PART_SUFFIX = ".part"
VERIFIED_SUFFIX = ".verified.json"

# connect fails fast when offline; read is per chunk, not for the whole 1.3 GB body
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
DEFAULT_RETRIES = 2
CHUNK_SIZE = 1024 * 1024
USER_AGENT = "ecgfm-ked-service (weights fetch)"

MANUAL_HINT = (
    "If this machine cannot reach it, download the files on another machine and export "
    "them by hand instead: ecgfm-ked export --checkpoint PATH (the .pt checkpoint) "
    "--text-model DIR (a directory with config.json and vocab.txt of Bio_ClinicalBERT) --out BUNDLE_DIR."
)


@dataclass(frozen=True)
class FetchedModel:
    """Where the fetched files are."""

    checkpoint: Path
    text_model_dir: Path
    checkpoint_sha256: str


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record, as its metadata describes it."""

    name: str
    url: str
    size: int | None
    md5: str | None


# --- configuration ----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$ECGFM_CACHE_DIR`` or ``~/.cache/ecgfm-ked``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ecgfm-ked"


def default_zenodo_url() -> str:
    """``$ECGFM_ZENODO_URL`` or https://zenodo.org."""
    return (os.environ.get(ENV_ZENODO_URL) or DEFAULT_ZENODO_URL).rstrip("/")


def default_hf_endpoint() -> str:
    """``$ECGFM_HF_ENDPOINT`` or https://huggingface.co."""
    return (os.environ.get(ENV_HF_ENDPOINT) or DEFAULT_HF_ENDPOINT).rstrip("/")


# --- helpers ----------------------------------------------------------------------------


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _unreachable(url: str, exc: Exception) -> FetchError:
    host = _host(url)
    return FetchError(
        f"could not reach {host} to download {url} ({type(exc).__name__}: {exc}). "
        f"Check the network, a proxy (HTTPS_PROXY) or the base URL. {MANUAL_HINT}",
        details={"url": url, "host": host, "reason": str(exc)},
    )


def _make_client(timeout: float | httpx.Timeout) -> httpx.Client:
    return httpx.Client(
        timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT}
    )


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def _verified_path(dest: Path) -> Path:
    return dest.with_name(dest.name + VERIFIED_SUFFIX)


def _hash_file(path: Path, hashers: Iterable[Any]) -> None:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            for h in hashers:
                h.update(chunk)


def _file_digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    _hash_file(path, (md5, sha))
    return md5.hexdigest(), sha.hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _already_verified(dest: Path, expected_md5: str | None, expected_size: int | None) -> str | None:
    """sha256 of ``dest`` if a verification record says it is complete and right, else None.

    Cheap: compares the record with the expectation and the file's size; it does not
    re-hash (the record is written only after a full verification).
    """
    if not dest.is_file():
        return None
    rec = _read_json(_verified_path(dest))
    sha256 = rec.get("sha256") if rec is not None else None
    if rec is None or not isinstance(sha256, str):
        return None
    size = dest.stat().st_size
    if rec.get("size") != size:
        return None
    if expected_size is not None and size != expected_size:
        return None
    if expected_md5 is not None and rec.get("md5") != expected_md5.lower():
        return None
    return sha256


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


# --- downloading one file ------------------------------------------------------------------


def download_file(
    url: str,
    dest: Path,
    *,
    expected_md5: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
    client: httpx.Client | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, move into place.

    Returns the sha256 (hex) of the file, which is also recorded next to it in
    ``<dest>.verified.json``. When ``dest`` is already there and verified (by that record,
    or by hashing it against ``expected_md5``) nothing is downloaded.

    ``retries``: how many times an interrupted transfer is resumed within this call
    before giving up (the ``.part`` stays, so a later call resumes again).

    Raises :class:`FetchError` on an unreachable host, an HTTP error, an interrupted
    transfer (after the retries), a size or checksum mismatch.
    """
    dest = Path(dest)
    expected_md5 = expected_md5.lower() if expected_md5 else None
    known = _already_verified(dest, expected_md5, expected_size)
    if known is not None:
        return known
    if dest.is_file() and expected_md5 is not None:
        # placed by hand or left without a record: hash once and adopt it if it matches
        size = dest.stat().st_size
        if expected_size is None or size == expected_size:
            md5, sha = _file_digests(dest)
            if md5 == expected_md5:
                _record_verified(dest, url=url, size=size, md5=md5, sha256=sha)
                return sha

    dest.parent.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    http = client if client is not None else _make_client(timeout)
    try:
        attempt = 0
        while True:
            try:
                _transfer(http, url, dest, expected_size=expected_size, progress=progress,
                          timeout=timeout)
                break
            except _Interrupted as exc:
                attempt += 1
                if attempt > retries:
                    raise FetchError(
                        f"download of {dest.name} from {_host(url)} was interrupted after "
                        f"{exc.have} of {exc.total if exc.total is not None else '?'} bytes "
                        f"({exc.reason}); run the fetch again to resume from there",
                        details={"url": url, "bytes": exc.have, "total": exc.total},
                    ) from exc.cause
    finally:
        if own_client:
            http.close()
    return _verify_and_install(dest, url=url, expected_md5=expected_md5,
                               expected_size=expected_size)


class _Interrupted(Exception):
    def __init__(self, have: int, total: int | None, reason: str, cause: Exception | None):
        super().__init__(reason)
        self.have, self.total, self.reason, self.cause = have, total, reason, cause


def _transfer(
    http: httpx.Client,
    url: str,
    dest: Path,
    *,
    expected_size: int | None,
    progress: bool,
    timeout: float | httpx.Timeout,
) -> None:
    """Bring ``dest.part`` to completion (as far as the server's bytes go)."""
    part = _part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()  # cannot be a prefix of the right file
        offset = 0
    if expected_size is not None and offset == expected_size and offset > 0:
        return  # complete from an earlier run: only verification is left

    headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else {
        "Accept-Encoding": "identity"}
    try:
        with http.stream("GET", url, headers=headers, follow_redirects=True,
                         timeout=timeout) as resp:
            if resp.status_code == 416 and offset:
                # our part is at least as long as the file: let verification decide,
                # or start over when the size is known to be wrong
                resp.close()
                if expected_size is None:
                    return
                part.unlink(missing_ok=True)
                raise _Interrupted(0, expected_size, "server refused the resume range", None)
            if resp.status_code == 404:
                raise FetchError(
                    f"{url} was not found (HTTP 404) on {_host(url)}",
                    details={"url": url, "status": 404},
                )
            if resp.status_code not in (200, 206):
                raise FetchError(
                    f"{_host(url)} answered HTTP {resp.status_code} for {url}",
                    details={"url": url, "status": resp.status_code},
                )
            mode = "ab"
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                if m is None or int(m.group(1)) != offset:
                    # a range we did not ask for: not safe to append, start over
                    resp.close()
                    part.unlink(missing_ok=True)
                    raise _Interrupted(0, expected_size, "server answered a different range",
                                       None)
            else:  # 200: the whole file (the server ignored or was not sent a Range)
                mode, offset = "wb", 0
            total = expected_size
            if total is None:
                length = resp.headers.get("content-length")
                if length and length.isdigit() and "content-encoding" not in resp.headers:
                    total = offset + int(length)
            have = offset
            with _progress_bar(dest.name, total, offset, progress) as bar, part.open(mode) as fh:
                try:
                    for chunk in resp.iter_raw():  # as received: nothing buffered is lost on a drop
                        fh.write(chunk)
                        have += len(chunk)
                        bar.update(len(chunk))
                except (httpx.TransportError, httpx.StreamError) as exc:
                    fh.flush()
                    raise _Interrupted(have, total, f"{type(exc).__name__}: {exc}", exc) from exc
                fh.flush()
                os.fsync(fh.fileno())
            if expected_size is not None and have < expected_size:
                raise _Interrupted(have, total, "the server closed the transfer early", None)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
        raise _unreachable(url, exc) from exc
    except (httpx.TransportError, httpx.StreamError) as exc:
        # read errors before any body byte (reset connection, read timeout on headers)
        have = part.stat().st_size if part.is_file() else 0
        raise _Interrupted(have, expected_size, f"{type(exc).__name__}: {exc}", exc) from exc


def _progress_bar(name: str, total: int | None, initial: int, enabled: bool) -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not enabled,
        leave=True,
        dynamic_ncols=True,
    )


def _verify_and_install(
    dest: Path, *, url: str, expected_md5: str | None, expected_size: int | None
) -> str:
    part = _part_path(dest)
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"size mismatch for {dest.name}: expected {expected_size} bytes, got {size}; "
            "the partial file was deleted, run the fetch again",
            details={"file": dest.name, "expected_size": expected_size, "actual_size": size},
        )
    md5, sha = _file_digests(part)
    if expected_md5 is not None and md5 != expected_md5:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"checksum mismatch for {dest.name}: expected md5 {expected_md5}, got {md5}; "
            "the downloaded file was deleted, run the fetch again",
            details={"file": dest.name, "expected_md5": expected_md5, "actual_md5": md5,
                     "url": url},
        )
    os.replace(part, dest)
    _record_verified(dest, url=url, size=size, md5=md5, sha256=sha)
    return sha


def _record_verified(dest: Path, *, url: str, size: int, md5: str, sha256: str) -> None:
    _write_json_atomic(
        _verified_path(dest),
        {"file": dest.name, "size": size, "md5": md5, "sha256": sha256, "source": url},
    )


# --- Zenodo ------------------------------------------------------------------------------------


def _get_json(http: httpx.Client, url: str, timeout: float | httpx.Timeout) -> Any:
    try:
        resp = http.get(url, headers={"Accept": "application/json"}, follow_redirects=True,
                        timeout=timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
        raise _unreachable(url, exc) from exc
    except httpx.TransportError as exc:
        raise FetchError(
            f"request to {_host(url)} failed ({type(exc).__name__}: {exc}) for {url}. "
            f"{MANUAL_HINT}",
            details={"url": url},
        ) from exc
    if resp.status_code != 200:
        raise FetchError(
            f"{_host(url)} answered HTTP {resp.status_code} for {url}",
            details={"url": url, "status": resp.status_code},
        )
    try:
        return resp.json()
    except ValueError as exc:
        raise FetchError(f"{url} did not return JSON", details={"url": url}) from exc


def _record_file_entries(record: Any) -> list[dict[str, Any]]:
    """File entries of a record in either shape Zenodo serves.

    Legacy (``/api/records/<id>``): ``files: [{key, size, checksum, links: {self}}]``.
    InvenioRDM (``Accept: application/vnd.inveniordm.v1+json``):
    ``files: {entries: {<key>: {key, size, checksum, links: {content, self}}}}``.
    """
    if not isinstance(record, dict):
        return []
    files = record.get("files")
    if isinstance(files, dict):
        entries = files.get("entries")
        if isinstance(entries, dict):
            out = []
            for key, entry in entries.items():
                if isinstance(entry, dict):
                    out.append({"key": key, **entry})
            return out
        if isinstance(entries, list):
            return [e for e in entries if isinstance(e, dict)]
        return []
    if isinstance(files, list):
        return [e for e in files if isinstance(e, dict)]
    return []


def _parse_md5(checksum: Any) -> str | None:
    if not isinstance(checksum, str) or not checksum:
        return None
    algo, sep, value = checksum.partition(":")
    if not sep:
        algo, value = "md5", checksum
    if algo.lower() != "md5" or not re.fullmatch(r"[0-9a-fA-F]{32}", value):
        return None
    return value.lower()


def zenodo_file_info(
    record_id: str,
    name: str,
    *,
    zenodo_url: str | None = None,
    client: httpx.Client | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
) -> RemoteFile:
    """Look ``name`` up in Zenodo record ``record_id``: download URL, size and md5.

    The download link is the entry's ``links.content`` (InvenioRDM), else ``links.self``
    (legacy shape, where it is the file's bytes), else
    ``{zenodo_url}/records/{record_id}/files/{name}``.
    """
    base = (zenodo_url or default_zenodo_url()).rstrip("/")
    meta_url = f"{base}/api/records/{quote(str(record_id), safe='')}"
    own_client = client is None
    http = client if client is not None else _make_client(timeout)
    try:
        record = _get_json(http, meta_url, timeout)
    finally:
        if own_client:
            http.close()
    entries = _record_file_entries(record)
    entry = next((e for e in entries if e.get("key") == name or e.get("filename") == name), None)
    if entry is None:
        listed = ", ".join(str(e.get("key") or e.get("filename")) for e in entries) or "none"
        raise FetchError(
            f"Zenodo record {record_id} at {base} has no file named {name} (files: {listed})",
            details={"record": str(record_id), "file": name},
        )
    raw_links = entry.get("links")
    links: dict[str, Any] = raw_links if isinstance(raw_links, dict) else {}
    link = links.get("content") or links.get("download") or links.get("self")
    if isinstance(link, str) and link:
        url = urljoin(meta_url, link)
    else:
        url = f"{base}/records/{quote(str(record_id), safe='')}/files/{quote(name)}"
    size = entry.get("size", entry.get("filesize"))
    md5 = _parse_md5(entry.get("checksum"))
    if md5 is None:
        raise FetchError(
            f"Zenodo record {record_id} gives no md5 checksum for {name} "
            f"(checksum field: {entry.get('checksum')!r}); refusing an unverifiable download",
            details={"record": str(record_id), "file": name},
        )
    return RemoteFile(name=name, url=url, size=int(size) if isinstance(size, int) else None,
                      md5=md5)


# --- Hugging Face ----------------------------------------------------------------------------


def hf_file_url(hf_endpoint: str, repo: str, filename: str, revision: str = DEFAULT_HF_REVISION) -> str:
    """``{endpoint}/{repo}/resolve/{revision}/{file}``."""
    return (f"{hf_endpoint.rstrip('/')}/{repo}/resolve/{quote(revision, safe='')}/"
            f"{quote(filename)}")


def _text_model_complete(text_dir: Path, repo: str, revision: str) -> bool:
    manifest = _read_json(text_dir / TEXT_MODEL_MANIFEST)
    if manifest is None or manifest.get("repo") != repo or manifest.get("revision") != revision:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not set(TEXT_MODEL_FILES) <= set(files):
        return False
    return all((text_dir / f).is_file() for f in files)


def fetch_text_model(
    text_dir: Path,
    *,
    hf_endpoint: str | None = None,
    repo: str = DEFAULT_HF_REPO,
    revision: str = DEFAULT_HF_REVISION,
    required: Iterable[str] = TEXT_MODEL_FILES,
    optional: Iterable[str] = OPTIONAL_TEXT_MODEL_FILES,
    progress: bool = True,
    client: httpx.Client | None = None,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> Path:
    """Fetch the tokenizer/config files of ``repo`` into ``text_dir``; return ``text_dir``.

    A 404 on an ``optional`` file is recorded and not an error. Nothing is requested
    when the manifest says an earlier run completed for the same repo and revision.
    """
    text_dir = Path(text_dir)
    if _text_model_complete(text_dir, repo, revision):
        return text_dir
    endpoint = (hf_endpoint or default_hf_endpoint()).rstrip("/")
    text_dir.mkdir(parents=True, exist_ok=True)
    fetched: dict[str, str] = {}
    missing: list[str] = []
    own_client = client is None
    http = client if client is not None else _make_client(timeout)
    try:
        for name, is_optional in [(n, False) for n in required] + [(n, True) for n in optional]:
            url = hf_file_url(endpoint, repo, name, revision)
            try:
                fetched[name] = download_file(url, text_dir / name, progress=progress,
                                              client=http, timeout=timeout, retries=retries)
            except FetchError as exc:
                if is_optional and exc.details.get("status") == 404:
                    missing.append(name)
                    continue
                raise
    finally:
        if own_client:
            http.close()
    _write_json_atomic(
        text_dir / TEXT_MODEL_MANIFEST,
        {"repo": repo, "revision": revision, "endpoint": endpoint, "files": fetched,
         "absent_optional": missing},
    )
    return text_dir


# --- everything ---------------------------------------------------------------------------------


def fetch_model(
    cache_dir: Path | None = None,
    *,
    zenodo_url: str | None = None,
    hf_endpoint: str | None = None,
    record_id: str = DEFAULT_RECORD_ID,
    checkpoint_name: str = DEFAULT_CHECKPOINT_NAME,
    hf_repo: str = DEFAULT_HF_REPO,
    hf_revision: str = DEFAULT_HF_REVISION,
    progress: bool = True,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    client: httpx.Client | None = None,
) -> FetchedModel:
    """Fetch checkpoint (Zenodo) and text-model files (Hugging Face) into ``cache_dir``.

    ``None`` arguments fall back to the environment (``ECGFM_CACHE_DIR``,
    ``ECGFM_ZENODO_URL``, ``ECGFM_HF_ENDPOINT``) and then the public defaults. A cache
    that is already complete is returned without touching the network.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ckpt = cache / CHECKPOINTS_SUBDIR / checkpoint_name
    text_dir = cache / TEXT_MODEL_SUBDIR
    own_client = client is None
    http = client if client is not None else _make_client(timeout)
    try:
        sha = _already_verified(ckpt, None, None)
        if sha is None:
            remote = zenodo_file_info(record_id, checkpoint_name, zenodo_url=zenodo_url,
                                      client=http, timeout=timeout)
            sha = download_file(remote.url, ckpt, expected_md5=remote.md5,
                                expected_size=remote.size, progress=progress, client=http,
                                timeout=timeout, retries=retries)
        fetch_text_model(text_dir, hf_endpoint=hf_endpoint, repo=hf_repo, revision=hf_revision,
                         progress=progress, client=http, timeout=timeout, retries=retries)
    finally:
        if own_client:
            http.close()
    return FetchedModel(checkpoint=ckpt, text_model_dir=text_dir, checkpoint_sha256=sha)


__all__ = [
    "DEFAULT_CHECKPOINT_NAME",
    "DEFAULT_HF_ENDPOINT",
    "DEFAULT_HF_REPO",
    "DEFAULT_RECORD_ID",
    "DEFAULT_ZENODO_URL",
    "FetchedModel",
    "RemoteFile",
    "default_cache_dir",
    "default_hf_endpoint",
    "default_zenodo_url",
    "download_file",
    "fetch_model",
    "fetch_text_model",
    "hf_file_url",
    "zenodo_file_info",
]
