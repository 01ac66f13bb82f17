"""argparse building blocks: one-line usage errors, options that refuse repeats, UUID arguments."""

from __future__ import annotations

import argparse
import uuid
from typing import Any, Optional, Sequence

from ..errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2, and takes no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # "--s3" must not be read as a prefix of --s3-endpoint, nor a typo as another option.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


class StoreOnce(argparse.Action):
    """Store a value, refusing a second occurrence of the same option (earlier clients silently kept one)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: Optional[str] = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            raise UsageError(f"{option_string} was given more than once; give it once")
        setattr(namespace, self.dest, self.stored_value(values))

    def stored_value(self, values: Any) -> Any:
        """What the option stores: its value."""
        return values


class SwitchOnce(StoreOnce):
    """A flag without a value (stored as True), also refused when repeated."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", 0)
        super().__init__(option_strings, dest, **kwargs)

    def stored_value(self, values: Any) -> Any:
        """A switch stores True."""
        return True


def uuid_argument(text: str) -> str:
    """argparse type for IMS ids."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a UUID") from None


def job_id_from(given: Optional[str], default: Optional[str], required: bool = False) -> Optional[str]:
    """The job id given, else ``default`` (``IMS_JOB_ID``, from the settings), checked as a UUID.

    ``UsageError`` when required and absent.
    """
    job_id = given or default or None
    if job_id is None:
        if required:
            raise UsageError("no IMS job id: give it as the last argument or set IMS_JOB_ID")
        return None
    try:
        return uuid_argument(job_id)
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"IMS_JOB_ID: {err}") from None
