"""The XML of S3's DeleteObjects and ListObjectsV2, both ways.

DeleteObjects: https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html
(a <Delete> body of at most 1000 <Object><Key>s, Quiet mode: the answer
lists only the keys that failed).  ListObjectsV2:
https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
(pages of <Contents> with Key and Size; IsTruncated and
NextContinuationToken lead to the next page).
"""
import base64
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

DELETE_BATCH = 1000    # DeleteObjects takes at most 1000 keys


def _local(tag: str) -> str:
    """A tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def delete_request(keys: list[str]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a quiet DeleteObjects of `keys` (full keys, the
    store's prefix included): Content-MD5, which S3 requires, and the type."""
    root = ET.Element("Delete")
    ET.SubElement(root, "Quiet").text = "true"
    for key in keys:
        ET.SubElement(ET.SubElement(root, "Object"), "Key").text = key
    body = ET.tostring(root, xml_declaration=True, encoding="UTF-8")
    headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
               "Content-Type": "application/xml"}
    return body, headers


def delete_failures(answer: bytes) -> list[str]:
    """The error codes of the keys a DeleteObjects answer says it could not
    delete (a key already gone, NoSuchKey, is not a failure)."""
    failed = []
    for error in ET.fromstring(answer):
        if _local(error.tag) == "Error":
            code = next((c.text for c in error if _local(c.tag) == "Code"), "")
            if code != "NoSuchKey":
                failed.append(code)
    return failed


@dataclass
class ListPage:
    """One ListObjectsV2 answer: (key, size in bytes) of each object, in
    order, and the token of the next page (None: this was the last)."""
    objects: list[tuple[str, int]]
    next_token: str | None


def list_page(answer: bytes) -> ListPage:
    """The objects and continuation of a ListObjectsV2 answer; raises
    xml.etree.ElementTree.ParseError for a body that is not XML."""
    root = ET.fromstring(answer)
    objects, token, truncated = [], None, False
    for child in root:
        tag = _local(child.tag)
        if tag == "Contents":
            fields = {_local(c.tag): c.text for c in child}
            objects.append((fields.get("Key") or "", int(fields.get("Size") or 0)))
        elif tag == "IsTruncated":
            truncated = child.text == "true"
        elif tag == "NextContinuationToken":
            token = child.text
    return ListPage(objects, token if truncated and token else None)
