"""AWS credentials and region, found in the order AWS tools use.

1. an explicit credentials file (refused when group- or world-readable);
2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
3. the profile AWS_PROFILE (or "default") in ~/.aws/credentials, then
   ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move them).

Secrets live only in the returned object; its repr hides them.
"""
import configparser
import os
import stat
from dataclasses import dataclass, field

from ..errors import UserError


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""


def _profile_section(parser: configparser.ConfigParser, profile: str, config_style: bool) -> dict | None:
    names = [profile] if not config_style else ([f"profile {profile}"] + (["default"] if profile == "default" else []))
    for name in names:
        if parser.has_section(name):
            return dict(parser.items(name))
    return None


def _read_ini(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            parser.read_file(f)
    except configparser.Error as e:
        raise UserError(f"cannot parse {path}: {e.message.splitlines()[0]}") from None
    return parser


def _from_section(section: dict | None, source: str) -> Credentials | None:
    if not section or "aws_access_key_id" not in section or "aws_secret_access_key" not in section:
        return None
    return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"],
                       section.get("aws_session_token") or None, source)


def load_credentials_file(path: str, profile: str | None = None) -> Credentials:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UserError(f"cannot read credentials file {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"credentials file {path} is readable by others; run chmod 600 {path}")
    parser = _read_ini(path)
    profile = profile or os.environ.get("AWS_PROFILE") or "default"
    found = _from_section(_profile_section(parser, profile, False), path) or \
        _from_section(_profile_section(parser, profile, True), path)
    if found is None:
        raise UserError(f"credentials file {path} has no aws_access_key_id/aws_secret_access_key "
                        f"for profile {profile!r}")
    return found


def resolve_credentials(credentials_file: str | None = None, profile: str | None = None) -> Credentials:
    if credentials_file:
        return load_credentials_file(credentials_file, profile)
    env = os.environ
    if not profile and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                           env.get("AWS_SESSION_TOKEN") or None, "environment")
    profile = profile or env.get("AWS_PROFILE") or "default"
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE", os.path.expanduser("~/.aws/credentials"))
    config = env.get("AWS_CONFIG_FILE", os.path.expanduser("~/.aws/config"))
    for path, config_style in ((shared, False), (config, True)):
        if os.path.exists(path):
            found = _from_section(_profile_section(_read_ini(path), profile, config_style), path)
            if found is not None:
                return found
    raise UserError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, or --credentials-file")


def resolve_region(region: str | None = None, profile: str | None = None) -> str:
    if region:
        return region
    env = os.environ
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        return env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
    config = env.get("AWS_CONFIG_FILE", os.path.expanduser("~/.aws/config"))
    if os.path.exists(config):
        section = _profile_section(_read_ini(config), profile or env.get("AWS_PROFILE") or "default", True)
        if section and section.get("region"):
            return section["region"]
    return "us-east-1"
