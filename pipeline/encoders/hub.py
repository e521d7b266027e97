"""Pretrained weights files: found in (or downloaded into) the usual caches, without torch.

timm's own order (``timm.models._builder._resolve_pretrained_source``): a Hugging Face hub
repository (``hf_hub_id``; ``model.safetensors`` before ``pytorch_model.bin``), else a URL into
torch.hub's checkpoint folder; torchvision's ShuffleNet is a URL. The file is resolved here so
that its sha256 can enter the encode key (a tag is only a name: a re-uploaded file or a cache
filled by hand must not share a key with the real weights), and the encoder then loads that file
through timm's own loader (``pretrained_cfg_overlay=dict(file=...)``).

Offline use: a file already in the hub cache (``HF_HOME``/``HF_HUB_CACHE``, filled in advance on
a machine with internet) is found with no network access at all. With ``HF_HUB_OFFLINE=1``, or
when the download host does not answer within seconds, a missing file is an error at once: the
hub client would otherwise retry for about a minute before failing (one HEAD request to the
host, through the proxy if one is set, decides).
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pipeline.encoders.registry import EncoderSpec
from pipeline.errors import WeightsError

HF_DEFAULT_FILE = "pytorch_model.bin"  # timm's HF_WEIGHTS_NAME
PROBE_SECONDS = 3.0


def pretrained_file(spec: EncoderSpec) -> Path:
    """The local file of ``spec``'s pretrained weights, downloading it only when missing."""
    hub = spec.hub
    if hub is None or not (hub.hf_hub_id or hub.url):
        raise WeightsError(f"encoder {spec.name!r} ({spec.pretrained_tag}) has no pretrained "
                           "weights in timm. Fix: WEIGHTS=random for a random-init baseline, "
                           "or WEIGHTS=/path/to/file.pth with a state dict for it")
    if hub.hf_hub_id:
        return _hf_file(spec, hub.hf_hub_id, hub.hf_hub_filename or HF_DEFAULT_FILE)
    assert hub.url is not None
    return _url_file(spec, hub.url)


def offline() -> bool:
    import huggingface_hub.constants as hf

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(hf.HF_HUB_OFFLINE)


def _candidates(filename: str) -> list[str]:
    """timm's safetensors-first alternatives for a hub file name, then the name itself."""
    safe = {"pytorch_model.bin": "model.safetensors",
            "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}.get(filename)
    if safe is None and filename.endswith(".bin"):
        safe = filename[:-4] + ".safetensors"
    return [*([safe] if safe else []), filename]


def _hf_file(spec: EncoderSpec, hub_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    names = _candidates(filename)
    for name in names:
        cached = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(cached, str):
            return Path(cached)
    where = f"the Hugging Face hub repository {repo} ({' or '.join(names)})"
    if offline():
        raise not_available(spec, where, "HF_HUB_OFFLINE is set and the hub cache has no copy")
    import huggingface_hub.constants as hf

    _require_network(spec, where, hf.ENDPOINT)
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, revision=revision or None))
        except EntryNotFoundError:
            continue
        except Exception as err:  # connection, HTTP, permission errors from the hub client
            raise not_available(spec, where, f"{type(err).__name__}: {err}") from err
    raise not_available(spec, where, "the repository has none of these files")


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, found as torch finds it (without importing torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def _url_file(spec: EncoderSpec, url: str) -> Path:
    target = torch_hub_checkpoints() / os.path.basename(urlparse(url).path)
    if target.is_file():
        return target
    if offline():
        raise not_available(spec, url, f"HF_HUB_OFFLINE is set and {target} does not exist")
    _require_network(spec, url, url)
    from torch.hub import HASH_REGEX, download_url_to_file

    match = HASH_REGEX.search(target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(target), match.group(1) if match else None, progress=False)
    except Exception as err:
        raise not_available(spec, url, f"{type(err).__name__}: {err}") from err
    return target


def _require_network(spec: EncoderSpec, where: str, url: str) -> None:
    """Fail at once when the download host does not answer an HTTP request within seconds.

    Any HTTP answer (even an error status) counts as an answer: the download then says what is
    wrong. The request runs in a thread because name lookup has no timeout of its own.
    """
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            urllib.request.urlopen(request, timeout=PROBE_SECONDS).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the host answered
        except (OSError, ValueError) as err:
            outcome.append(err)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(PROBE_SECONDS + 1)
    if not outcome or outcome[0] is not None:
        host = urlparse(url).netloc
        why = f"{host} did not answer within {PROBE_SECONDS:.0f} s"
        if outcome:
            reason = getattr(outcome[0], "reason", None) or outcome[0]
            why = f"{host} did not answer ({reason})"
        raise not_available(spec, where, f"no network: {why}")


def not_available(spec: EncoderSpec, where: str, why: str) -> WeightsError:
    reference = (f"; the standard file for these weights is named {spec.reference_file}"
                 if spec.reference_file else "")
    hub_id = spec.hub.hf_hub_id if spec.hub else None
    fill = (f"`huggingface-cli download {hub_id}`, then copy HF_HOME's hub folder here and set "
            "HF_HUB_OFFLINE=1" if hub_id else
            f"download {where} into torch.hub's checkpoints folder ({torch_hub_checkpoints()})")
    return WeightsError(
        f"pretrained weights for encoder {spec.name!r} ({spec.pretrained_tag}) are not in the "
        f"local cache and cannot be downloaded from {where}: {why}. Fix: fill the cache from a "
        f"machine with internet access ({fill}), or supply a local file with "
        f"WEIGHTS=/path/to/file.pth or WEIGHTS=/path/to/file.safetensors holding a state dict "
        f"for the {spec.name} architecture{reference}. Random weights are never used instead "
        f"unless WEIGHTS=random is given.")
