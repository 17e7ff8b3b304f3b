"""AWS credentials and region, found in the order AWS tools use.

1. an explicit credentials file (refused when group- or world-readable);
2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
3. the profile AWS_PROFILE (or "default") in ~/.aws/credentials, then
   ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move them).

Every file consulted must be readable UTF-8 text that parses as an INI
file (userfiles.py): anything else is one line naming the file, never a
traceback.  A shared file that does not exist, or is empty, holds no
profile, as for the AWS tools.

Secrets live only in the returned object; its repr hides them.
"""
import configparser
import os
import stat
from dataclasses import dataclass, field

from ..errors import UserError
from .names import shown
from .userfiles import check_regular_file, read_text_file


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""


class CredentialSource:
    """Where a store gets the credentials for each request it signs.

    `current()` returns credentials valid for a while yet; a source whose
    credentials expire (an instance role, a credential_process) refreshes
    them before they do.  Thread-safe: every store thread calls it.
    `source` names where they come from, for messages (never a secret)."""
    source: str = ""

    def current(self) -> Credentials:
        raise NotImplementedError


class FixedCredentials(CredentialSource):
    """Credentials that do not expire: keys from a file or the environment."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self.source = credentials.source

    def current(self) -> Credentials:
        return self._credentials


def _profile_section(parser: configparser.ConfigParser, profile: str, config_style: bool) -> dict | None:
    names = [profile] if not config_style else ([f"profile {profile}"] + (["default"] if profile == "default" else []))
    for name in names:
        if parser.has_section(name):
            return dict(parser.items(name))
    return None


def _read_ini(path: str, what: str) -> configparser.ConfigParser:
    """The parsed INI file at `path` (its role `what`, for messages).

    Raises UserError naming the file when it cannot be read (userfiles.py)
    or parsed; the message names lines, sections and option names, never a
    line's content (it may hold a secret)."""
    text = read_text_file(path, what)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise UserError(f"cannot parse {what} {shown(path)}: {_parse_problem(e)}") from None
    return parser


def _parse_problem(e: configparser.Error) -> str:
    """What is wrong, in words that quote no value from the file."""
    if isinstance(e, configparser.DuplicateSectionError):
        return f"section [{shown(e.section)}] appears twice (line {e.lineno})"
    if isinstance(e, configparser.DuplicateOptionError):
        return f"{shown(e.option)} appears twice in [{shown(e.section)}] (line {e.lineno})"
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno} comes before any [section] header"
    if isinstance(e, configparser.ParsingError) and e.errors:
        return f"line {e.errors[0][0]} is not 'name = value'"
    return type(e).__name__


def _from_section(section: dict | None, source: str) -> Credentials | None:
    if not section or "aws_access_key_id" not in section or "aws_secret_access_key" not in section:
        return None
    return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"],
                       section.get("aws_session_token") or None, source)


def load_credentials_file(path: str, profile: str | None = None) -> Credentials:
    """The credentials of `profile` (else AWS_PROFILE, else default) in
    the file the user named with --credentials-file.  Raises UserError
    naming the file when it is not a private, readable, non-empty INI file
    with that profile's keys."""
    mode = check_regular_file(path, "credentials file").st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"credentials file {shown(path)} is readable by others; run chmod 600 {shown(path)}")
    parser = _read_ini(path, "credentials file")
    if not parser.sections():
        raise UserError(f"credentials file {shown(path)} is empty (no [profile] sections)")
    profile = profile or os.environ.get("AWS_PROFILE") or "default"
    found = _from_section(_profile_section(parser, profile, False), path) or \
        _from_section(_profile_section(parser, profile, True), path)
    if found is None:
        raise UserError(f"credentials file {shown(path)} has no aws_access_key_id/aws_secret_access_key "
                        f"for profile {shown(repr(profile))}")
    return found


def resolve_credentials(credentials_file: str | None = None, profile: str | None = None) -> CredentialSource:
    """The first source of credentials in the order of the module docstring.
    Raises UserError when there is none, or a file consulted is unusable."""
    return FixedCredentials(_find_credentials(credentials_file, profile))


def _find_credentials(credentials_file: str | None, profile: str | None) -> Credentials:
    if credentials_file:
        return load_credentials_file(credentials_file, profile)
    env = os.environ
    if not profile and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                           env.get("AWS_SESSION_TOKEN") or None, "environment")
    profile = profile or env.get("AWS_PROFILE") or "default"
    looked = []
    for path, what, config_style in ((_shared_file(), "AWS credentials file", False),
                                     (_config_file(), "AWS config file", True)):
        if not os.path.lexists(path):
            continue
        looked.append(shown(path))
        found = _from_section(_profile_section(_read_ini(path, what), profile, config_style), path)
        if found is not None:
            return found
    where = f"; no profile {shown(repr(profile))} with keys in {' or '.join(looked)}" if looked else ""
    raise UserError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    f"AWS_PROFILE, or --credentials-file{where}")


def _shared_file() -> str:
    return os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")


def _config_file() -> str:
    return os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")


def resolve_region(region: str | None = None, profile: str | None = None) -> str:
    if region:
        return region
    env = os.environ
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        return env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
    config = _config_file()
    if os.path.lexists(config):
        section = _profile_section(_read_ini(config, "AWS config file"),
                                   profile or env.get("AWS_PROFILE") or "default", True)
        if section and section.get("region"):
            return section["region"]
    return "us-east-1"
