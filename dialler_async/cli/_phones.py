"""The import command's phone rules: policy, suppression list, de-duplication, from argv."""

from __future__ import annotations

import argparse
from typing import Any

import attrs
from rich.console import Console

from .._phones import METADATA_VERSION
from .._policy import PhonePolicy
from .._screen import PhoneScreen
from .._suppress import SuppressionList
from ._connect import UsageError
from ._progress import note


@attrs.frozen
class PhoneRules:
    """What ``--phone-region``, ``--phone-format``, ``--phone-check``, ``--suppress`` and
    ``--dedupe-phone`` asked for, the suppression list loaded once."""

    policy: PhonePolicy
    suppress: SuppressionList | None
    dedupe: bool
    overwrite: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, console: Console) -> PhoneRules | None:
        """None without ``--phone-region``; :class:`UsageError` for what cannot work."""
        region = getattr(args, "phone_region", None)
        if region is None:
            if getattr(args, "suppress", None) or getattr(args, "dedupe_phone", False):
                raise UsageError("--suppress and --dedupe-phone need --phone-region")
            return None
        try:
            policy = PhonePolicy(region, format=args.phone_format, check=args.phone_check)
        except ValueError as exc:
            raise UsageError(f"--phone-region: {exc}") from exc
        suppress = None
        if getattr(args, "suppress", None):
            try:
                suppress = SuppressionList.from_file(args.suppress, policy)
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"cannot read the suppression list {args.suppress}: {exc}"
                ) from exc
            if not args.quiet:
                rejected = suppress.rejected
                extra = f" ({rejected:,} lines that are not numbers left out)" if rejected else ""
                note(console, f"suppression list: {len(suppress):,} numbers{extra}", "dim")
        dedupe = bool(getattr(args, "dedupe_phone", False))
        return cls(policy, suppress, dedupe, bool(getattr(args, "overwrite_duplicates", True)))

    def screen(self) -> PhoneScreen:
        """A fresh screen with these rules (a dry run applies it itself)."""
        return PhoneScreen(
            self.policy, suppress=self.suppress, dedupe=self.dedupe, clear_suppressed=self.overwrite
        )

    def report(self) -> dict[str, Any]:
        """What the report records (validity depends on the ``phonenumbers`` release)."""
        return {
            "region": self.policy.region,
            "format": self.policy.format,
            "check": self.policy.check,
            "phonenumbers_version": METADATA_VERSION,
            "suppression_list": None
            if self.suppress is None
            else {"numbers": len(self.suppress), "rejected_lines": self.suppress.rejected},
            "dedupe_phone": self.dedupe,
        }
