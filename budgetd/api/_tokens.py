"""Bearer tokens: who may call the API, with which roles, on which campaigns.

Owns the tokens file format and the constant-time check of a presented token. Imports only the
stdlib. Tokens are stored as SHA-256 digests, never in plain text.

The file (``api.tokens_file``) is TOML, one ``[[token]]`` table per token::

    [[token]]
    name = "ops"                      # [A-Za-z0-9_.-]{1,64}, unique; appears in logs
    sha256 = "5e88…"                  # hex SHA-256 of the token's UTF-8 bytes, unique
    roles = ["admin"]                 # any of admin, bidder, reader

    [[token]]
    name = "bidder-fra"
    sha256 = "…"
    roles = ["bidder"]
    prefixes = ["acme", "globex:summer"]   # bidder only: these campaigns and their descendants
    rate_per_s = 50000                # optional: this token's request rate (default api.rate_per_s)
    burst = 100000                    # optional: its bucket (default api.rate_burst)

Roles: ``admin`` may do everything; ``bidder`` may reserve, commit, release, spend and batch,
and read, on the campaigns under its ``prefixes`` (all campaigns without any); ``reader`` may
read everything. A prefix is a campaign id and covers that campaign and every descendant
(``acme`` covers ``acme:summer`` but not ``acme2``).

A node reads the file again on SIGHUP and when its content changes (`TokensFile`): rotating a
token is writing the new file (add the new token, move callers over, remove the old one). A file
that does not load keeps the tokens in force and logs one error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "ADMIN",
    "BIDDER",
    "READER",
    "ROLES",
    "TokenEntry",
    "Tokens",
    "TokensError",
    "TokensFile",
    "hash_token",
]

ADMIN: Final = "admin"
BIDDER: Final = "bidder"
READER: Final = "reader"
ROLES: Final = (ADMIN, BIDDER, READER)

#: Tokens in one file; a named maximum like every table.
TOKENS_MAX: Final = 10_000
#: A presented token longer than this is refused without hashing.
TOKEN_LENGTH_MAX: Final = 512

_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_SEGMENT: Final = r"[A-Za-z0-9_.\-]{1,64}"
_CAMPAIGN_ID: Final = re.compile(rf"{_SEGMENT}(?::{_SEGMENT}){{0,3}}")
_FIELDS: Final = frozenset({"name", "sha256", "roles", "prefixes", "rate_per_s", "burst"})
#: A token's own ``rate_per_s`` and ``burst`` are at most these (api.rate_* have the same).
RATE_PER_S_MAX: Final = 100_000_000
BURST_MAX: Final = 1_000_000_000

log = logging.getLogger("budgetd.api")


class TokensError(ValueError):
    """The tokens file is unreadable or malformed; the message names the entry."""


def hash_token(token: str) -> str:
    """The hex SHA-256 digest stored in the tokens file for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _covers(prefix: str, campaign_id: str) -> bool:
    return campaign_id == prefix or campaign_id.startswith(prefix + ":")


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One caller. ``prefixes`` empty: the bidder role covers every campaign."""

    name: str
    sha256: str
    roles: frozenset[str]
    prefixes: tuple[str, ...] = ()
    #: This token's own request rate and bucket; None: the node's api.rate_per_s / rate_burst.
    rate_per_s: int | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "prefixes", tuple(self.prefixes))
        if type(self.name) is not str or not _NAME.fullmatch(self.name):
            raise TokensError(f"token name {self.name!r} must match [A-Za-z0-9_.-]{{1,64}}")
        where = f"token {self.name!r}"
        if type(self.sha256) is not str or not _DIGEST.fullmatch(self.sha256):
            raise TokensError(f"{where}: sha256 must be 64 lowercase hex digits")
        if not self.roles or not self.roles <= set(ROLES):
            raise TokensError(f"{where}: roles must be a non-empty subset of {list(ROLES)}")
        for prefix in self.prefixes:
            if type(prefix) is not str or not _CAMPAIGN_ID.fullmatch(prefix):
                raise TokensError(f"{where}: prefix {prefix!r} is not a campaign id")
        if self.prefixes and (BIDDER not in self.roles or ADMIN in self.roles):
            raise TokensError(f"{where}: prefixes limit the bidder role, and admin has none")
        for field, maximum in (("rate_per_s", RATE_PER_S_MAX), ("burst", BURST_MAX)):
            value = getattr(self, field)
            if value is not None and (type(value) is not int or not 1 <= value <= maximum):
                raise TokensError(f"{where}: {field} must be an integer from 1 to {maximum}")

    @classmethod
    def from_plaintext(
        cls, name: str, token: str, *, roles: Iterable[str], prefixes: Iterable[str] = ()
    ) -> TokenEntry:
        """The entry for a plain ``token`` (tests, and the CLI that mints tokens)."""
        return cls(name, hash_token(token), frozenset(roles), tuple(prefixes))

    def to_toml(self) -> str:
        """This entry as a ``[[token]]`` table of the tokens file."""
        lines = [
            "[[token]]",
            f'name = "{self.name}"',
            f'sha256 = "{self.sha256}"',
            "roles = [" + ", ".join(f'"{role}"' for role in ROLES if role in self.roles) + "]",
        ]
        if self.prefixes:
            lines.append("prefixes = [" + ", ".join(f'"{p}"' for p in self.prefixes) + "]")
        if self.rate_per_s is not None:
            lines.append(f"rate_per_s = {self.rate_per_s}")
        if self.burst is not None:
            lines.append(f"burst = {self.burst}")
        return "\n".join(lines) + "\n"

    # Rights ------------------------------------------------------------------------------------

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def may_spend(self, campaign_id: str) -> bool:
        """Reserve, commit, release, spend on ``campaign_id``."""
        return self.is_admin or (BIDDER in self.roles and self._within(campaign_id))

    def may_read(self, campaign_id: str) -> bool:
        return self.is_admin or READER in self.roles or self.may_spend(campaign_id)

    def may_list(self, prefix: str) -> bool:
        """List campaign ids starting with the string ``prefix``."""
        if self.is_admin or READER in self.roles or (BIDDER in self.roles and not self.prefixes):
            return True
        return BIDDER in self.roles and any(_covers(p, prefix) for p in self.prefixes)

    def needs_owner_check(self) -> bool:
        """Whether commits and releases must look up the reservation's campaign first."""
        return not self.is_admin and bool(self.prefixes)

    def _within(self, campaign_id: str) -> bool:
        return not self.prefixes or any(_covers(p, campaign_id) for p in self.prefixes)


class Tokens:
    """The tokens a node accepts. Empty: every request that needs a token is refused."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = tuple(entries)
        if len(self._entries) > TOKENS_MAX:
            raise TokensError(f"more than {TOKENS_MAX} tokens")
        for attribute in ("name", "sha256"):
            values = [getattr(entry, attribute) for entry in self._entries]
            if len(set(values)) != len(values):
                raise TokensError(f"two tokens have the same {attribute}")
        self._digests = tuple((bytes.fromhex(entry.sha256), entry) for entry in self._entries)

    @classmethod
    def from_entries(cls, entries: Iterable[TokenEntry]) -> Tokens:
        return cls(entries)

    @classmethod
    def empty(cls) -> Tokens:
        return cls(())

    @classmethod
    def parse(cls, document: dict[str, Any]) -> Tokens:
        """Tokens from a decoded TOML document."""
        unknown = set(document) - {"token"}
        if unknown:
            raise TokensError(f"unknown key(s) {sorted(unknown)}: the file holds [[token]] tables")
        tables = document.get("token", [])
        if type(tables) is not list:
            raise TokensError("token must be an array of tables: [[token]]")
        entries = []
        for index, table in enumerate(tables):
            if type(table) is not dict:
                raise TokensError(f"token[{index}] must be a table")
            extra = set(table) - _FIELDS
            if extra:
                raise TokensError(f"token[{index}]: unknown field(s) {sorted(extra)}")
            name, digest = table.get("name"), table.get("sha256")
            roles = table.get("roles")
            prefixes = table.get("prefixes", [])
            if type(name) is not str or type(digest) is not str:
                raise TokensError(f"token[{index}]: name and sha256 are required strings")
            if type(roles) is not list or not all(type(role) is str for role in roles):
                raise TokensError(f"token[{index}]: roles must be a list of strings")
            if len(set(roles)) != len(roles):
                raise TokensError(f"token[{index}]: roles repeat")
            if type(prefixes) is not list:
                raise TokensError(f"token[{index}]: prefixes must be a list of campaign ids")
            rate_per_s, burst = table.get("rate_per_s"), table.get("burst")
            entries.append(
                TokenEntry(name, digest, frozenset(roles), tuple(prefixes), rate_per_s, burst)
            )
        return cls(entries)

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        path = Path(path)
        try:
            with path.open("rb") as file:
                document = tomllib.load(file)
        except OSError as error:
            raise TokensError(f"{path}: {error.strerror}") from error
        except tomllib.TOMLDecodeError as error:
            raise TokensError(f"{path}: {error}") from error
        try:
            return cls.parse(document)
        except TokensError as error:
            raise TokensError(f"{path}: {error}") from error

    @classmethod
    def for_settings(cls, tokens_file: str | None) -> Tokens:
        """The node's tokens: ``api.tokens_file``, or none at all when it is unset."""
        return cls.empty() if tokens_file is None else cls.load(tokens_file)

    @staticmethod
    def render_file(tokens: Iterable[tuple[str, str, Iterable[str]] | TokenEntry]) -> str:
        """A tokens file for ``tokens``: entries, or ``(name, plain token, roles)`` triples (the
        plain token is hashed here and never written)."""
        entries = [
            item
            if isinstance(item, TokenEntry)
            else TokenEntry.from_plaintext(item[0], item[1], roles=item[2])
            for item in tokens
        ]
        Tokens(entries)  # the checks that loading the file back makes: raises TokensError
        header = "# budgetd API tokens: SHA-256 digests of bearer tokens, never the tokens.\n"
        return header + "\n".join(entry.to_toml() for entry in entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> TokenEntry | None:
        """The entry whose digest matches ``token``; compares against every entry, each in
        constant time, so the answer's timing does not depend on which entry (if any) matched."""
        if not 0 < len(token) <= TOKEN_LENGTH_MAX:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: TokenEntry | None = None
        for stored, entry in self._digests:
            if hmac.compare_digest(stored, digest):
                found = entry
        return found


class TokensFile:
    """The tokens in force, and the file they were read from (None: fixed tokens). `check`
    reads the file again when its size, mtime or content changed; `reload` reads it always
    (SIGHUP). A file that does not load keeps the tokens in force: never locks everyone out."""

    def __init__(self, tokens: Tokens, path: str | Path | None = None) -> None:
        self.tokens = tokens
        self.path = None if path is None else Path(path)
        self._seen: tuple[int, int, int] | None = self._stat()
        self._content = self._digest()
        self._refused: bytes | None = None

    @classmethod
    def load(cls, path: str | Path) -> TokensFile:
        return cls(Tokens.load(path), path)

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _digest(self) -> bytes | None:
        if self.path is None:
            return None
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None

    def check(self) -> bool:
        """Reload if the file changed since the last look; whether new tokens are in force."""
        if self.path is None:
            return False
        seen = self._stat()
        if seen == self._seen:
            return False
        self._seen = seen
        return self.reload(force=False)

    def reload(self, *, force: bool = True) -> bool:
        """Read the file again; whether new tokens are in force. ``force`` False: only if the
        content differs from the file in force (a touch alone changes nothing)."""
        if self.path is None:
            return False
        content = self._digest()
        if not force and content == self._content:
            return False
        try:
            tokens = Tokens.load(self.path)
        except TokensError as error:
            if content != self._refused:  # one error per broken version of the file
                self._refused = content
                log.error(
                    "tokens file not reloaded, the %d tokens in force stay: %s",
                    len(self.tokens),
                    error,
                )
            return False
        self.tokens, self._content, self._refused = tokens, content, None
        log.info("tokens file %s reloaded: %d tokens", self.path, len(tokens))
        return True
