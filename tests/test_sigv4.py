"""SigV4 signatures against the worked examples in AWS's S3 documentation
("Signature Calculations for the Authorization Header: Transferring Payload
in a Single Chunk"): same credentials, time, request, same signature.

The rest of the suite checks signing against a real server (SeaweedFS with
auth on); these vectors pin the algorithm to AWS's own figures."""
import calendar

from bucketdisk.store.credentials import Credentials
from bucketdisk.store.sigv4 import EMPTY_SHA256, Signer, canonical_query

CREDENTIALS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
WHEN = calendar.timegm((2013, 5, 24, 0, 0, 0))
HOST = "examplebucket.s3.amazonaws.com"


def authorization(signed: dict) -> str:
    return signed["Authorization"]


def test_get_object_with_range():
    signed = Signer(CREDENTIALS, "us-east-1").sign("GET", HOST, "/test.txt", "", {"Range": "bytes=0-9"},
                                                  EMPTY_SHA256, when=WHEN)
    assert authorization(signed) == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert signed["x-amz-date"] == "20130524T000000Z"
    assert signed["Host"] == HOST and signed["Range"] == "bytes=0-9"


def test_list_objects_query_is_sorted_and_signed():
    query = canonical_query({"prefix": "J", "max-keys": "2"})
    assert query == "max-keys=2&prefix=J"
    signed = Signer(CREDENTIALS, "us-east-1").sign("GET", HOST, "/", query, {}, EMPTY_SHA256, when=WHEN)
    assert authorization(signed).endswith(
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")


def test_unsigned_headers_and_session_token():
    """If-None-Match travels unsigned (a proxy may drop it); a session token
    is sent and signed; the secret never appears in the headers."""
    creds = Credentials("AKIDEXAMPLE", "secret-never-shown", session_token="token-123")
    signed = Signer(creds, "eu-west-1").sign("PUT", HOST, "/k", "", {"If-None-Match": "*"}, EMPTY_SHA256,
                                             when=WHEN)
    assert signed["If-None-Match"] == "*"
    assert signed["x-amz-security-token"] == "token-123"
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token," in authorization(signed)
    assert "/20130524/eu-west-1/s3/aws4_request" in authorization(signed)
    assert not any("secret-never-shown" in value for value in signed.values())
    assert "secret-never-shown" not in repr(Signer(creds, "eu-west-1"))
