"""The Hugging Face Hub: fetch a model repository into the local Hub cache, or upload a model folder.

Only this module talks to the Hub (through `huggingface_hub`); every failure is one SamspError line that says
what to do, and offline a repository that is already in the cache is used without the network.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import __version__
from ..errors import SamspError

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def is_repo_id(text: str) -> bool:
    """Whether `text` has the shape of a Hub repository id ("user/name")."""
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text


def download_snapshot(repo_id: str, files: list[str]) -> Path:
    """The local folder holding `files` of the Hub model `repo_id` (downloaded into the Hub cache if needed)."""
    from huggingface_hub import snapshot_download  # here, so `import samsp` stays fast

    try:
        folder = snapshot_download(repo_id, allow_patterns=files, library_name="samsp", library_version=__version__)
    except Exception as err:  # huggingface_hub raises its own types for offline, missing, gated and private repos
        raise SamspError(
            f"{repo_id}: not a local model folder, and the Hugging Face Hub repository could not be loaded "
            f"({type(err).__name__}); on a machine with a network run `hf download {repo_id} --local-dir DIR` "
            "and give DIR as the model (or copy that machine's Hub cache, ~/.cache/huggingface/hub, here)"
        ) from err
    return Path(folder)


def upload_folder(folder: Path, repo_id: str, files: list[str], private: bool = False, token: str | None = None) -> str:
    """Upload `files` of `folder` to the Hub model repository `repo_id` (created if missing); return its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            allow_patterns=files,
            repo_type="model",
            commit_message=f"Upload samsp model ({', '.join(files)})",
        )
    except Exception as err:  # network, authentication and permission errors all come from huggingface_hub
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise SamspError(
            f"{repo_id}: upload to the Hugging Face Hub failed ({type(err).__name__}: {first_line}); log in with "
            "`hf auth login` (or set HF_TOKEN) and check the network and your rights on the repository"
        ) from err
    return str(url)
