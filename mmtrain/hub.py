"""Models on the Hugging Face Hub: `mmtrain export RUN DIR --push-to-hub ORG/NAME` uploads an
exported bundle, and `mmtrain.load("hf://ORG/NAME[@REVISION]")` downloads one into the
Hugging Face cache and opens it like a local bundle.

Everything goes through `huggingface_hub`: it finds the token (`hf auth login` or `HF_TOKEN`),
keeps the cache (`HF_HUB_CACHE`) and honours `HF_HUB_OFFLINE=1`, under which a model that
was downloaded once still loads from the cache. Only the bundle's safetensors weights and
JSON description are downloaded and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmtrain.errors import HubError

HF_SCHEME = "hf://"
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN to a token with write access"


def is_hub_uri(location: object) -> bool:
    """Whether `location` names a model on the Hub (`"hf://ORG/NAME[@REVISION]"`)."""
    return isinstance(location, str) and location.startswith(HF_SCHEME)


@dataclass(frozen=True)
class HubModel:
    """A model repository on the Hub and the revision (branch, tag or commit) to read."""

    repo_id: str
    revision: str | None = None


def check_repo_id(repo_id: str, what: str = "the Hub repository") -> str:
    """`repo_id` when it is a valid `ORG/NAME`, else a `HubError` saying why."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1:
        raise HubError(
            f"{what} must be ORG/NAME (a user or organisation, then a name); got {repo_id!r}"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(f"{what} {repo_id!r} is not a valid repository id: {error}") from None
    return repo_id


def parse_hub_uri(uri: str) -> HubModel:
    """`"hf://ORG/NAME"` or `"hf://ORG/NAME@REVISION"` → `HubModel`; anything else is a
    `HubError` that shows the expected form."""
    # huggingface_hub's own URI parser is too recent for the releases `datasets` still allows.
    if not is_hub_uri(uri):
        raise HubError(f"{uri!r} is not a Hub model URI; expected hf://ORG/NAME[@REVISION]")
    repo_id, at, revision = uri[len(HF_SCHEME) :].partition("@")
    if at and not revision:
        raise HubError(f"{uri!r} has an empty revision after '@'; expected hf://ORG/NAME@REVISION")
    check_repo_id(repo_id, f"the repository in {uri!r}")
    return HubModel(repo_id, revision or None)


def download_bundle(uri: str, files: list[str]) -> Path:
    """The local folder (in the Hugging Face cache) holding `files` of the bundle at `uri`,
    downloaded when they are not cached yet. Under `HF_HUB_OFFLINE=1` only the cache is
    read."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from mmtrain._version import __version__

    model = parse_hub_uri(uri)
    try:
        folder = snapshot_download(
            model.repo_id,
            revision=model.revision,
            allow_patterns=files,
            library_name="mmtrain",
            library_version=__version__,
        )
    except LocalEntryNotFoundError:
        raise HubError(
            f"{uri} is not in the Hugging Face cache and the Hub cannot be reached (offline "
            "or HF_HUB_OFFLINE=1); download it once with a network connection"
        ) from None
    except GatedRepoError:
        raise HubError(
            f"{uri} is gated: ask for access on its Hub page, then {LOGIN_HINT}"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{model.repo_id} has no revision {model.revision!r} on the Hub") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"no model repository {model.repo_id} on the Hub, or it is private: check the "
            "name, or log in with `hf auth login` (or set HF_TOKEN) to read a private one"
        ) from None
    except HfHubHTTPError as error:
        raise HubError(f"cannot download {uri}: {error}") from None
    return Path(folder)


def push_bundle(
    bundle: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the exported bundle folder to the model repository `repo_id` (created when
    missing; `revision` is a branch, created from main when missing) and return the
    commit's URL. Failures are `HubError`s saying what to do; the bundle stays on disk."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_repo_id(repo_id)
    retry = f"the bundle is intact in {bundle}; rerun the export to push it again"
    if get_token() is None:
        raise HubError(f"no Hugging Face token to upload {repo_id} with: {LOGIN_HINT} ({retry})")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=bundle,
            revision=revision,
            commit_message=commit_message or f"Upload mmtrain bundle from {bundle.name}",
        )
    except OfflineModeIsEnabled:
        raise HubError(
            f"cannot upload {repo_id}: HF_HUB_OFFLINE=1 is set; unset it ({retry})"
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubError(
                f"the Hub refused to write {repo_id} (HTTP {status}): {LOGIN_HINT}, "
                f"for an account that may write to that organisation ({retry})"
            ) from None
        raise HubError(f"cannot upload {repo_id}: {error} ({retry})") from None
    except Exception as error:
        # No network: the HTTP client's connection errors, whose classes differ between
        # huggingface_hub releases (requests, httpx).
        raise HubError(
            f"cannot upload {repo_id} to the Hugging Face Hub: {type(error).__name__}: {error} "
            f"({retry})"
        ) from None
    return str(getattr(commit, "commit_url", commit))
