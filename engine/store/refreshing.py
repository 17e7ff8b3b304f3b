"""Credentials that expire, refreshed before they do.

A `RefreshingCredentials` source holds one set of credentials and the time
they expire, and asks its `fetch()` (an EC2 instance role, container
credentials, a credential_process: metadata.py, process.py) for new ones
from REFRESH_BEFORE seconds before that time: botocore's "advisory"
window (15 minutes; the AWS CLI's credential code).  EC2 makes an
instance role's new credentials available at least five minutes before
the old ones expire (AWS EC2 User Guide, "Retrieve security credentials
from instance metadata"), so inside the window a fetch may hand back the
same credentials: they are kept, and asked for again later.

Many threads call `current()`; one of them refreshes at a time while the
others go on signing with the credentials at hand.  A refresh that fails
while those still hold is logged in one line (never a secret) and tried
again after retry_delay() seconds; once they have expired (EXPIRY_MARGIN
before their Expiration: a signed request must reach the server in time)
every thread waits for the refresh, and a failed one makes the request
fail with one StoreError line saying which credentials expired and why
they could not be renewed (tried again at most once a second).
"""
import logging
import threading
import time
from datetime import datetime, timezone

from ..errors import StoreError, UserError
from .credentials import CredentialSource, Credentials

log = logging.getLogger(__name__)

REFRESH_BEFORE = 15 * 60   # seconds before expiry a refresh is tried (botocore's advisory window)
EXPIRY_MARGIN = 10.0       # seconds before expiry credentials are no longer used
MAX_RETRY_DELAY = 60.0     # seconds between refresh attempts at most (botocore: at most one a minute)
EXPIRED_RETRY_DELAY = 1.0  # seconds between attempts once expired: each failed request may try again


def retry_delay(left: float) -> float:
    """Seconds to wait before the next refresh attempt, `left` seconds
    before the credentials at hand expire: a quarter of what is left
    (attempts come closer together as expiry nears), from 1 to 60."""
    return min(MAX_RETRY_DELAY, max(EXPIRED_RETRY_DELAY, left / 4))


def parse_expiration(text) -> float:
    """Seconds since the epoch of an RFC 3339 time such as
    2026-11-30T13:20:00Z (fractions and offsets allowed; no offset means
    UTC).  Raises ValueError for anything else; the message quotes nothing."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("not an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def shown_time(when: float) -> str:
    """`when` (seconds since the epoch) as 2026-11-30T13:20:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class RefreshingCredentials(CredentialSource):
    """A CredentialSource over `fetch()`, renewed as the module docstring says.

    Subclasses set `source` (what the credentials are, for messages: never a
    secret) and implement fetch() -> (Credentials, expiry in seconds since
    the epoch or None for never), raising UserError with one line that
    quotes nothing secret when they cannot.  The constructor fetches once
    and lets that UserError through: a command given no usable credentials
    stops before it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        credentials, expires = self._fetch_valid()
        self._failure: str | None = None
        self._state = self._after_fetch(credentials, expires, time.time())

    def fetch(self) -> tuple[Credentials, float | None]:
        raise NotImplementedError

    @property
    def expires(self) -> float | None:
        """When the credentials at hand expire (seconds since the epoch; None: never)."""
        return self._state[1]

    def current(self) -> Credentials:
        """Credentials valid for at least EXPIRY_MARGIN seconds more.

        Raises StoreError (one line) when those at hand have expired and
        a refresh fails."""
        credentials, expires, next_try = self._state  # one tuple: a consistent triple
        now = time.time()
        usable = now < expires - EXPIRY_MARGIN
        if usable and now < next_try:
            return credentials
        if usable:
            if self._lock.acquire(blocking=False):  # else another thread is refreshing
                try:
                    self._refresh(still_valid=True)
                finally:
                    self._lock.release()
            return self._state[0]
        with self._lock:
            credentials, expires, next_try = self._state
            now = time.time()
            if now < expires - EXPIRY_MARGIN:  # another thread renewed them meanwhile
                return credentials
            if now < next_try and self._failure:  # a refresh failed a moment ago
                raise StoreError(self._failure)
            self._refresh(still_valid=False)
            return self._state[0]

    def _refresh(self, still_valid: bool) -> None:
        _, expires, _ = self._state
        now = time.time()
        try:
            credentials, new_expires = self._fetch_valid()
        except (UserError, OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if still_valid:
                delay = retry_delay(expires - now)
                self._state = (self._state[0], expires, now + delay)
                log.warning("could not refresh the credentials of %s (those at hand hold until %s; trying again "
                            "in %.0f s): %s", self.source, shown_time(expires), delay, reason)
                return
            # No log line here: the failure goes up with the request, whose caller says it.
            self._failure = (f"the credentials of {self.source} {'expired' if now >= expires else 'expire'} at "
                             f"{shown_time(expires)} and could not be refreshed: {reason}")
            self._state = (self._state[0], expires, now + EXPIRED_RETRY_DELAY)
            raise StoreError(self._failure) from None
        self._failure = None
        self._state = self._after_fetch(credentials, new_expires, now)
        if new_expires is not None and new_expires != expires:
            log.info("refreshed the credentials of %s; they hold until %s", self.source, shown_time(new_expires))

    def _fetch_valid(self) -> tuple[Credentials, float | None]:
        """fetch(), refusing credentials that have already expired."""
        credentials, expires = self.fetch()
        if expires is not None and expires - EXPIRY_MARGIN <= time.time():
            raise UserError(f"{self.source} handed out credentials that expired at {shown_time(expires)}")
        return credentials, expires

    @staticmethod
    def _after_fetch(credentials: Credentials, expires: float | None, now: float) -> tuple:
        """The state after a successful fetch: (credentials, expiry, next attempt)."""
        if expires is None:
            return credentials, float("inf"), float("inf")
        due = expires - REFRESH_BEFORE
        return credentials, expires, due if due > now else now + retry_delay(expires - now)


def credentials_in(doc: dict, what: str, said: str, source: str,
                   token_field: str = "Token") -> tuple[Credentials, float | None]:
    """Credentials and expiry out of the JSON object `doc` that `what`
    `said` ("answered", "printed"): AccessKeyId, SecretAccessKey, the
    session token under `token_field`, an optional RFC 3339 Expiration (the
    shapes of EC2's and ECS's metadata and of credential_process).  Raises
    UserError naming `what`, never quoting a value."""
    missing = [k for k in ("AccessKeyId", "SecretAccessKey") if not doc.get(k)]
    if missing:
        raise UserError(f"{what} {said} no {' or '.join(missing)}")
    for name in ("AccessKeyId", "SecretAccessKey", token_field):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise UserError(f"{what} {said} a {name} that is not a string")
    expires = None
    if doc.get("Expiration") is not None:
        try:
            expires = parse_expiration(doc["Expiration"])
        except ValueError as e:
            raise UserError(f"{what} {said} an Expiration that is {e}") from None
    return Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get(token_field) or None, source), expires
