"""Credentials from a metadata service: an EC2 instance role (IMDSv2) and
ECS/EKS container credentials.  Both expire and are refreshed
(refreshing.py).

EC2 (AWS EC2 User Guide, "Use the Instance Metadata Service to access
instance metadata" and "Retrieve security credentials from instance
metadata"): PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds
gives a session token; GET /latest/meta-data/iam/security-credentials/
with the token in X-aws-ec2-metadata-token lists the instance's role, and
GET .../ROLE answers {Code, AccessKeyId, SecretAccessKey, Token,
Expiration}.  Only IMDSv2 is spoken (no fallback to tokenless IMDSv1).
As in the AWS SDKs ("Amazon EC2 instance metadata" in the AWS SDKs and
Tools Reference Guide): the service is http://169.254.169.254, or
http://[fd00:ec2::254] with AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6,
or AWS_EC2_METADATA_SERVICE_ENDPOINT; AWS_EC2_METADATA_DISABLED=true
turns it off; each request times out after 1 second and is tried once
(the AWS CLI's metadata_service_timeout and _num_attempts), so a machine
that is no EC2 instance loses at most about a second looking.

Containers (AWS SDKs and Tools Reference Guide, "Container credential
provider"): GET http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI,
or $AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to a loopback
address or to the ECS/EKS agents' 169.254.170.2, 169.254.170.23,
fd00:ec2::23), with the Authorization header from
AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or AWS_CONTAINER_AUTHORIZATION_TOKEN;
it answers {AccessKeyId, SecretAccessKey, Token, Expiration}.  2 s timeout.

The HTTP goes through requests with trust_env off: metadata never goes
through a proxy, and no .netrc or proxy variable applies.  No message
quotes an answer's body: it may hold a secret.
"""
import ipaddress
import json
import os
import re
import time
from urllib.parse import urlsplit

import requests

from ..errors import UserError
from .credentials import Credentials
from .refreshing import RefreshingCredentials, credentials_in
from .s3args import ROLE_RE, endpoint_parts

IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_ENDPOINT_IPV6 = "http://[fd00:ec2::254]"
IMDS_TIMEOUT = 1.0           # seconds, connect and read (the AWS CLI's metadata_service_timeout)
IMDS_TOKEN_TTL = 21600       # seconds a session token lives (6 h, the SDKs' choice)
CONTAINER_HOST = "http://169.254.170.2"
CONTAINER_TIMEOUT = 2.0      # seconds (botocore's container fetcher)
CONTAINER_HOSTS = {"169.254.170.2", "169.254.170.23", "fd00:ec2::23"}
MAX_ANSWER = 64 * 1024       # bytes: credentials JSON is a few KiB


class Unreachable(UserError):
    """Nothing answered at the metadata service's address: this is no EC2
    instance (the credential chain then goes on)."""


class NoRole(UserError):
    """The instance answered, and has no IAM role attached."""


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never a proxy, .netrc or REQUESTS_CA_BUNDLE for link-local metadata
    return session


def _request(session: requests.Session, method: str, url: str, what: str, timeout: float,
             headers: dict[str, str]) -> requests.Response:
    """One request, its body read.

    Raises Unreachable when no connection could be made or no answer came
    in time, UserError for any other transport failure or an answer over
    MAX_ANSWER bytes."""
    try:
        reply = session.request(method, url, headers=headers, timeout=timeout, allow_redirects=False)
        body = reply.content
    except (requests.ConnectionError, requests.Timeout) as e:
        raise Unreachable(f"{what} at {url_base(url)} did not answer ({_transport(e)})") from None
    except (requests.RequestException, OSError) as e:
        raise UserError(f"{what} at {url_base(url)} failed: {type(e).__name__}") from None
    if len(body) > MAX_ANSWER:
        raise UserError(f"{what} at {url_base(url)} answered more than {MAX_ANSWER} bytes")
    return reply


def _transport(e: Exception) -> str:
    if isinstance(e, requests.Timeout):
        return "timed out"
    text = str(e)
    for words in ("refused", "No route to host", "Network is unreachable", "Name or service not known"):
        if words.lower() in text.lower():
            return words.lower()
    return "no connection"


def url_base(url: str) -> str:
    """scheme://host[:port] of `url`: what messages show of it (a path or
    query may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def credentials_from_json(body: bytes, what: str, source: str, token_field: str = "Token") \
        -> tuple[Credentials, float | None]:
    """Credentials and expiry out of a metadata answer's JSON.

    Raises UserError naming `what`, never quoting the body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{what} answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise UserError(f"{what} answered JSON that is not an object")
    if "Code" in doc and doc["Code"] != "Success":
        code = doc["Code"] if isinstance(doc["Code"], str) and re.fullmatch(r"\w{1,40}", doc["Code"]) else "?"
        raise UserError(f"{what} answered Code {code}, not Success")
    return credentials_in(doc, what, "answered", source, token_field)


# --------------------------------------------------------------------------
# EC2
# --------------------------------------------------------------------------

def imds_disabled() -> bool:
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true"


def imds_endpoint() -> str:
    """The instance metadata service's scheme://host[:port] by the SDKs'
    settings; raises UserError for an unusable one."""
    text = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    if text:
        try:
            scheme, netloc = endpoint_parts(text)
        except ValueError as e:
            raise UserError(f"AWS_EC2_METADATA_SERVICE_ENDPOINT must be scheme://host[:port]: {e}") from None
        return f"{scheme}://{netloc}"
    mode = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4").strip().lower()
    if mode not in ("ipv4", "ipv6"):
        raise UserError("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE must be IPv4 or IPv6")
    return IMDS_ENDPOINT_IPV6 if mode == "ipv6" else IMDS_ENDPOINT


class InstanceRoleCredentials(RefreshingCredentials):
    """The credentials of an EC2 instance's IAM role, from IMDSv2.

    `role` None: the instance's role (the first the service lists).
    Raises Unreachable (nothing answered), NoRole (no role attached) or
    UserError (any other failure), each one line quoting no answer."""

    def __init__(self, role: str | None = None, endpoint: str | None = None) -> None:
        self._endpoint = endpoint or imds_endpoint()
        self._role = role
        self._http = _session()
        self._token: tuple[str, float] = ("", 0.0)  # (session token, when to ask for a new one)
        self.source = f"the EC2 instance role{' ' + role if role else ''} ({self._endpoint})"
        super().__init__()

    def fetch(self) -> tuple[Credentials, float | None]:
        role = self._role or self._listed_role()
        self.source = f"the EC2 instance role {role} ({self._endpoint})"
        what = f"the EC2 instance metadata service (role {role})"
        reply = self._get(f"/latest/meta-data/iam/security-credentials/{role}", what)
        if reply.status_code == 404:
            raise UserError(f"this EC2 instance has no IAM role {role} (the instance metadata service at "
                            f"{self._endpoint} answered 404)")
        self._check(reply, what)
        credentials, expires = credentials_from_json(reply.content, what, self.source)
        return credentials, expires

    def _listed_role(self) -> str:
        what = "the EC2 instance metadata service"
        reply = self._get("/latest/meta-data/iam/security-credentials/", what)
        if reply.status_code == 404:
            raise NoRole(f"this EC2 instance has no IAM role (the instance metadata service at {self._endpoint} "
                         "answered 404)")
        self._check(reply, what)
        try:
            names = reply.content.decode("ascii").split()
        except UnicodeDecodeError:
            names = []
        if not names or not ROLE_RE.fullmatch(names[0]):
            raise UserError(f"{what} at {self._endpoint} listed no usable role name")
        return names[0]

    def _get(self, path: str, what: str) -> requests.Response:
        """GET `path` with a session token; a 401 (the token expired early) asks for a new one, once."""
        for attempt in (1, 2):
            headers = {"X-aws-ec2-metadata-token": self._session_token(fresh=attempt == 2)}
            reply = _request(self._http, "GET", self._endpoint + path, what, IMDS_TIMEOUT, headers)
            if reply.status_code != 401:
                return reply
        return reply

    def _session_token(self, fresh: bool) -> str:
        token, renew_at = self._token
        if token and not fresh and time.time() < renew_at:
            return token
        what = "the EC2 instance metadata service"
        reply = _request(self._http, "PUT", self._endpoint + "/latest/api/token", what, IMDS_TIMEOUT,
                         {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL)})
        if reply.status_code != 200 or not reply.content.strip():
            raise UserError(f"{what} at {self._endpoint} gave no IMDSv2 session token (HTTP {reply.status_code})")
        try:
            token = reply.content.decode("ascii").strip()
        except UnicodeDecodeError:
            raise UserError(f"{what} at {self._endpoint} gave a session token that is not text") from None
        self._token = (token, time.time() + IMDS_TOKEN_TTL - 60)
        return token

    def _check(self, reply: requests.Response, what: str) -> None:
        if reply.status_code != 200:
            raise UserError(f"{what} at {self._endpoint} answered HTTP {reply.status_code}")


# --------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------

def container_configured() -> bool:
    env = os.environ
    return bool(env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"))


class ContainerCredentials(RefreshingCredentials):
    """ECS task / EKS pod credentials from the container credential
    endpoint the environment names.  Raises UserError (one line, never
    quoting a token or an answer) when the settings are unusable or the
    endpoint gives no credentials."""

    def __init__(self) -> None:
        self._url, self._token_setting = _container_settings()
        self._http = _session()
        self.source = f"the container credentials endpoint ({url_base(self._url)})"
        super().__init__()

    def fetch(self) -> tuple[Credentials, float | None]:
        what = "the container credentials endpoint"
        headers = {}
        token = _container_token(self._token_setting)
        if token:
            headers["Authorization"] = token
        reply = _request(self._http, "GET", self._url, what, CONTAINER_TIMEOUT, headers)
        if reply.status_code != 200:
            raise UserError(f"{what} at {url_base(self._url)} answered HTTP {reply.status_code}")
        return credentials_from_json(reply.content, f"{what} at {url_base(self._url)}", self.source)


def _container_settings() -> tuple[str, str | None]:
    env = os.environ
    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    if relative:
        if not relative.startswith("/"):
            raise UserError("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /")
        url = CONTAINER_HOST + relative
    else:
        url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError("AWS_CONTAINER_CREDENTIALS_FULL_URI must be an http:// or https:// URL")
        if parts.scheme == "http" and not _allowed_http_host(parts.hostname):
            raise UserError("AWS_CONTAINER_CREDENTIALS_FULL_URI may use http:// only to a loopback address or "
                            "the ECS/EKS agent (169.254.170.2, 169.254.170.23, fd00:ec2::23); use https://")
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    return url, (f"file:{token_file}" if token_file else None)


def _allowed_http_host(host: str) -> bool:
    if host in CONTAINER_HOSTS or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _container_token(setting: str | None) -> str | None:
    """The Authorization header's value: the token file's text (read at
    each fetch: the agent rotates it), else AWS_CONTAINER_AUTHORIZATION_TOKEN."""
    if setting:
        from .userfiles import read_text_file

        token = read_text_file(setting[5:], "container authorization token file").strip()
    else:
        token = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "").strip()
    if "\r" in token or "\n" in token:
        raise UserError("the container authorization token holds a line break")
    return token or None
