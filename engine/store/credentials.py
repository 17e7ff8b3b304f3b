"""AWS credentials and region, found in the order AWS tools use, then
s3backer's access file.

1. an explicit credentials file (--credentials-file; refused when group-
   or world-readable): an AWS credentials file, or s3backer's
   `accessID:accessKey` format (its --accessFile habit; passwdfile.py);
2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
3. the profile (--profile, else AWS_PROFILE, else "default") in
   ~/.aws/credentials, then ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE /
   AWS_CONFIG_FILE move them): its keys, or its credential_process
   (process.py);
4. container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or
   _FULL_URI (metadata.py);
5. the EC2 instance role, from the instance metadata service (IMDSv2;
   metadata.py) unless AWS_EC2_METADATA_DISABLED=true: on a machine that
   is no EC2 instance this costs at most about a second;
6. ~/.s3backer_passwd, the first `accessID:accessKey` line (refused when
   group- or world-readable).

--ec2-role ROLE replaces the whole order: that instance role, from the
instance metadata service, or one line saying why not.

A source that is configured but fails (a profile's credential_process that
fails, container settings that give nothing, an unusable file) is one
line, not a step to the next source, as in the AWS SDKs; a named profile
(--profile, AWS_PROFILE) that holds no credentials is one line too.  Only
the default profile's absence, and an instance metadata service that
does not answer or lists no role, pass on to the next source.

Every file consulted must be readable UTF-8 text that parses as an INI
file (userfiles.py): anything else is one line naming the file, never a
traceback.  A shared file that does not exist, or is empty, holds no
profile, as for the AWS tools.

Secrets live only in the returned object; its repr hides them.
Credentials that expire (process, container, instance role) are renewed
before they do (refreshing.py).
"""
import configparser
import os
from dataclasses import dataclass, field

from ..errors import UserError
from .names import shown
from .userfiles import read_text_file


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
    return _parse_ini(read_text_file(path, what), path, what)


def _parse_ini(text: str, path: str, what: str) -> configparser.ConfigParser:
    """`text` (of the file at `path`) parsed as INI; UserError as _read_ini."""
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
    """The credentials in the file the user named with --credentials-file:
    an AWS credentials file (the keys of `profile`, else AWS_PROFILE, else
    default), or s3backer's accessID:accessKey format (its first entry).
    Raises UserError naming the file when it is not a private, readable,
    non-empty file of either kind with those keys."""
    from .passwdfile import check_private, looks_like_passwd, parse_passwd

    check_private(path, "credentials file")
    text = read_text_file(path, "credentials file")
    if looks_like_passwd(text):
        return parse_passwd(text, path, "credentials file")
    parser = _parse_ini(text, path, "credentials file")
    if not parser.sections():
        raise UserError(f"credentials file {shown(path)} is empty (no [profile] sections or accessID:accessKey "
                        "lines)")
    profile = profile or os.environ.get("AWS_PROFILE") or "default"
    found = _from_section(_profile_section(parser, profile, False), path) or \
        _from_section(_profile_section(parser, profile, True), path)
    if found is None:
        raise UserError(f"credentials file {shown(path)} has no aws_access_key_id/aws_secret_access_key "
                        f"for profile {shown(repr(profile))}")
    return found


def resolve_credentials(credentials_file: str | None = None, profile: str | None = None,
                        ec2_role: str | None = None) -> CredentialSource:
    """The first source of credentials in the order of the module docstring
    (`ec2_role`: that EC2 instance role only).  Raises UserError when there
    is none, or a source consulted is unusable."""
    if ec2_role:
        if credentials_file:
            raise UserError("give --ec2-role or --credentials-file, not both")
        return _instance_role(ec2_role)
    if credentials_file:
        return FixedCredentials(load_credentials_file(credentials_file, profile))
    env = os.environ
    half = [name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(name)]
    if not profile and len(half) == 1:  # as the AWS SDKs do: half a key pair is a mistake, not "none"
        raise UserError(f"{half[0]} is not set, but the other half of the key pair is; set both or neither")
    if not profile and not half:
        return FixedCredentials(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                                            env.get("AWS_SESSION_TOKEN") or None, "environment"))
    named = profile or env.get("AWS_PROFILE")
    profile = named or "default"
    found, looked = _from_profile(profile)
    if found is not None:
        return found
    if named:
        where = f" in {' or '.join(looked)}" if looked else " (no ~/.aws/credentials or ~/.aws/config)"
        raise UserError(f"no S3 credentials: profile {shown(repr(profile))} has no keys or credential_process"
                        f"{where}")
    return _after_profiles(looked)


def _from_profile(profile: str) -> tuple[CredentialSource | None, list[str]]:
    """The profile's keys or credential_process, in the credentials file,
    then the config file; and the files looked in (for messages)."""
    looked = []
    for path, what, config_style in ((_shared_file(), "AWS credentials file", False),
                                     (_config_file(), "AWS config file", True)):
        if not os.path.lexists(path):
            continue
        looked.append(shown(path))
        section = _profile_section(_read_ini(path, what), profile, config_style)
        found = _from_section(section, path)
        if found is not None:
            return FixedCredentials(found), looked
        if section and section.get("credential_process", "").strip():
            from .process import ProcessCredentials

            return ProcessCredentials(section["credential_process"], profile, path), looked
    return None, looked


def _after_profiles(looked: list[str]) -> CredentialSource:
    """Container credentials, the EC2 instance role, ~/.s3backer_passwd:
    the rest of the order, when no profile had credentials."""
    from . import metadata
    from .passwdfile import default_path, load_passwd_file

    if metadata.container_configured():
        return metadata.ContainerCredentials()
    imds_problem = ""
    if not metadata.imds_disabled():
        endpoint = metadata.imds_endpoint()  # a malformed setting is one line, not a step to the next source
        try:
            return metadata.InstanceRoleCredentials(endpoint=endpoint)
        except metadata.Unreachable:
            pass  # no EC2 instance: the usual case off AWS
        except UserError as e:
            imds_problem = f"; {e}"
    passwd = default_path()
    if os.path.lexists(passwd):
        return FixedCredentials(load_passwd_file(passwd))
    where = f"; no profile 'default' with keys in {' or '.join(looked)}" if looked else ""
    raise UserError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    f"AWS_PROFILE, --credentials-file or ~/.s3backer_passwd{where}{imds_problem}")


def _instance_role(role: str) -> CredentialSource:
    """--ec2-role: that role from the instance metadata service, or one line saying why not."""
    from . import metadata
    from .s3args import check_role_name

    try:
        check_role_name(role)
    except ValueError as e:
        raise UserError(f"--ec2-role: {e}") from None
    if metadata.imds_disabled():
        raise UserError("--ec2-role: the instance metadata service is turned off (AWS_EC2_METADATA_DISABLED=true)")
    try:
        return metadata.InstanceRoleCredentials(role)
    except metadata.Unreachable as e:
        raise UserError(f"--ec2-role {role}: {e}; is this an EC2 instance?") from None
    except UserError as e:
        raise UserError(f"--ec2-role {role}: {e}") from None


def _shared_file() -> str:
    return os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")


def _config_file() -> str:
    return os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")


def configured_region(region: str | None = None, profile: str | None = None) -> str | None:
    """The region the user gave: `region` (--region), else AWS_REGION, else
    AWS_DEFAULT_REGION, else `profile`'s (or AWS_PROFILE's, or default's)
    in the AWS config file; None when none is (the s3:// store then asks
    the bucket).  Raises UserError for an AWS config file that cannot be read."""
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
    return None
