"""The harness's S3 side: a lean client for the raw bench (requests and
requests-aws4auth, as the s3:// store sends and signs, nothing else), a
requests client for bucket administration, and Target, which hands out a
fresh bucket or prefix per volume and deletes it afterwards."""
from __future__ import annotations

import datetime as dt
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from requests_aws4auth import AWS4Auth

from config import TIMEOUT
from shell import BenchError


class LeanClient:
    """The raw bench's client: one pooled connection (a requests Session
    that reads nothing from the environment), each request signed by
    requests-aws4auth (SigV4, the body's SHA-256 included), no retries,
    each body read whole from the raw response."""

    def __init__(self, endpoint: str, auth: AWS4Auth) -> None:
        self.endpoint = endpoint
        self.auth = auth
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, method: str, bucket: str, key: str, body: bytes | None) -> tuple[int, bytes]:
        url = f"{self.endpoint}/{bucket}/{quote(key, safe='/-_.~')}"
        r = self.session.request(method, url, data=body, auth=self.auth, stream=True, timeout=TIMEOUT,
                                 allow_redirects=False)
        try:
            return r.status_code, r.raw.read(decode_content=False)
        finally:
            r.raw.release_conn()

    def close(self) -> None:
        self.session.close()


class S3:
    """Path-style S3 client (requests): bucket admin for the harness; its
    lean_client() is the raw bench's."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str):
        self.endpoint = endpoint.rstrip("/")
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self._session = self.session()
        self._auth = self.auth()

    def auth(self) -> AWS4Auth:
        return AWS4Auth(self.access_key, self.secret_key, self.region, "s3")

    @staticmethod
    def session(pool: int = 4) -> requests.Session:
        s = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        return s

    def lean_client(self) -> "LeanClient":
        return LeanClient(self.endpoint, self.auth())

    def url(self, bucket: str, key: str = "") -> str:
        return f"{self.endpoint}/{bucket}" + (f"/{quote(key, safe='/-_.~')}" if key else "")

    def request(self, method: str, bucket: str, key: str = "", **kw) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("auth", self._auth)
        session = kw.pop("session", self._session)
        return session.request(method, self.url(bucket, key), **kw)

    def create_bucket(self, bucket: str) -> None:
        r = self.request("PUT", bucket)
        if r.status_code != 200:
            raise BenchError(f"create bucket {bucket}: HTTP {r.status_code} {r.text[:200]}")

    def bucket_exists(self, bucket: str) -> bool:
        r = self.request("HEAD", bucket)
        return r.status_code == 200

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        params = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        while True:
            r = self.request("GET", bucket, params=params)
            if r.status_code == 404:
                return keys
            if r.status_code != 200:
                raise BenchError(f"list {bucket}/{prefix}: HTTP {r.status_code} {r.text[:200]}")
            root = ET.fromstring(r.content)
            for el in root.iter():
                el.tag = el.tag.split("}", 1)[-1]
            keys += [c.findtext("Key") for c in root.findall("Contents")]
            token = root.findtext("NextContinuationToken")
            if root.findtext("IsTruncated") != "true" or not token:
                return keys
            params["continuation-token"] = token

    def delete_prefix(self, bucket: str, prefix: str) -> None:
        import base64
        import hashlib
        from xml.sax.saxutils import escape
        keys = self.list_keys(bucket, prefix)
        for i in range(0, len(keys), 1000):
            body = ("<Delete><Quiet>true</Quiet>" + "".join(
                f"<Object><Key>{escape(k)}</Key></Object>" for k in keys[i:i + 1000])
                    + "</Delete>").encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            r = self.request("POST", bucket, params={"delete": ""}, data=body,
                             headers={"Content-MD5": md5, "Content-Type": "application/xml"})
            if r.status_code != 200:
                raise BenchError(f"delete in {bucket}: HTTP {r.status_code} {r.text[:200]}")

    def delete_bucket(self, bucket: str) -> None:
        self.delete_prefix(bucket, "")
        r = self.request("DELETE", bucket)
        if r.status_code not in (200, 204, 404):
            raise BenchError(f"delete bucket {bucket}: HTTP {r.status_code} {r.text[:200]}")


@dataclass
class Place:
    bucket: str
    prefix: str  # without a trailing slash


class Target:
    """Where the benchmark writes: a bucket per unit on our own server (deleting
    a SeaweedFS bucket frees its volumes at once), or prefixes in the user's bucket."""

    def __init__(self, s3: S3, bucket: str | None, addressing: str, region_flag: str | None):
        self.s3 = s3
        self.own = bucket is None
        self.bucket = bucket
        self.addressing = addressing
        self.region_flag = region_flag
        self.run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.live: list[Place] = []

    def place(self, tag: str) -> Place:
        if self.own:
            p = Place(f"bench-{tag}", "disk")
            self.s3.create_bucket(p.bucket)
        else:
            p = Place(self.bucket, f"bucketdisk-bench-{self.run_id}/{tag}")
        self.live.append(p)
        return p

    def release(self, p: Place) -> None:
        if self.own:
            self.s3.delete_bucket(p.bucket)
        else:
            self.s3.delete_prefix(p.bucket, p.prefix + "/")
        if p in self.live:
            self.live.remove(p)

    def env(self) -> dict[str, str]:
        return os.environ | {"AWS_ACCESS_KEY_ID": self.s3.access_key,
                             "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                             "AWS_REGION": self.s3.region}
