"""Which proxy the environment gives the s3:// store, checked once.

The variables are read as requests reads them (requests.utils:
get_environ_proxies, then select_proxy): HTTP_PROXY for http endpoints,
HTTPS_PROXY for https ones, ALL_PROXY for both, NO_PROXY the hosts that
bypass them, each also in lower case (lower case wins, as in
urllib.request.getproxies_environment).  requests itself takes a proxy
without a scheme as http:// (prepend_scheme_if_needed) and only reaches
http:// and https:// proxies without PySocks, which is not shipped: any
other proxy it would use is refused here, in one line, before a request
is sent (requests would otherwise fail every attempt until --retry-time
ran out, then name the endpoint).  Messages name a proxy as host:port,
never its user or password.
"""
import os
from urllib.parse import urlsplit

from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy
from urllib3.util import parse_url

from ..errors import UserError


def environ_proxies(base: str) -> tuple[dict[str, str], str | None]:
    """(proxies for requests, the chosen proxy as host:port or None) for
    requests to `base` (scheme://host[:port]).

    Raises UserError naming the variable when the proxy requests would use
    cannot be parsed, is not http:// or https:// (socks needs PySocks),
    or names no host."""
    proxies = get_environ_proxies(base + "/")  # {} when NO_PROXY covers it
    chosen = select_proxy(base + "/", proxies)
    if not chosen:
        return proxies, None
    variable = _variable(proxies, chosen)
    try:
        parts = parse_url(prepend_scheme_if_needed(chosen, "http"))
    except ValueError:  # urllib3's LocationParseError; its text may hold the password
        raise UserError(f"{variable} cannot be parsed as a proxy URL (use http://HOST:PORT)") from None
    scheme = (parts.scheme or "").lower()
    if scheme.startswith("socks"):
        raise UserError(f"{variable} names a {scheme} proxy ({proxy_name(chosen)}): socks proxies are not "
                        "supported (use an http:// or https:// proxy)")
    if scheme not in ("http", "https"):
        raise UserError(f"{variable} names a proxy of scheme {scheme!r}: only http:// and https:// proxies "
                        "are supported")
    if not parts.host:
        raise UserError(f"{variable} names a proxy without a host (use http://HOST:PORT)")
    return proxies, proxy_name(chosen)


def _variable(proxies: dict[str, str], chosen: str) -> str:
    """The environment variable that gave `chosen` (HTTP_PROXY, all_proxy...)."""
    keys = [key for key, value in proxies.items() if value == chosen and key != "no"]
    for key in sorted(keys, key=lambda k: k == "all"):  # select_proxy prefers the scheme's own
        names = [name for name, value in os.environ.items() if name.lower() == f"{key}_proxy" and value == chosen]
        if names:
            return min(names, key=lambda n: n != n.lower())  # lower case wins, as urllib reads them
    return "the proxy setting"


def proxy_name(url: str) -> str:
    """host:port of a proxy URL, never its user or password."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        host = parts.hostname or "?"
    except ValueError:
        return "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host
