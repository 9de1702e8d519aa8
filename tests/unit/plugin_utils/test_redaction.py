"""redact_url (plugins/filter/url.py over plugins/plugin_utils/redaction.py): credentials out of URLs.

The signed URLs follow the shapes their services document: AWS S3 presigned URLs (X-Amz-Algorithm,
X-Amz-Credential, X-Amz-Signature query parameters), Azure SAS tokens (sv, sig, se), GitLab/GitHub tokens in the
user-info or a token= parameter.
"""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.confidential_gpu.host.plugins.filter.url import FilterModule, redact_url

CASES = [
    ("https://user:tok3n@github.com/kata-containers/kata-containers/releases/download/3.32.0",
     "https://***@github.com/kata-containers/kata-containers/releases/download/3.32.0"),
    ("https://tok3n@example.com:8443/a/b.tar.gz", "https://***@example.com:8443/a/b.tar.gz"),
    ("https://bucket.s3.amazonaws.com/gpu-admin-tools.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
     "&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=abcdef0123",
     "https://bucket.s3.amazonaws.com/gpu-admin-tools.tar.gz?X-Amz-Algorithm=***&X-Amz-Credential=***"
     "&X-Amz-Signature=***"),
    ("https://acct.blob.core.windows.net/c/kata.tar.zst?sv=2022-11-02&se=2025-01-01&sig=c2lnbmF0dXJl%3D",
     "https://acct.blob.core.windows.net/c/kata.tar.zst?sv=***&se=***&sig=***"),
    ("http://host/file?token", "http://host/file?***"),
    ("http://host/file#frag-secret", "http://host/file#***"),
    ("https://example.com/plain/path.tar.gz", "https://example.com/plain/path.tar.gz"),
]


@pytest.mark.parametrize("url,shown", CASES)
def test_a_url_keeps_its_host_and_path_and_loses_its_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_urls_in_running_text_and_structures_are_redacted_with_their_punctuation_kept() -> None:
    text = "was not installed from https://u:p4ss@h/x.tar.gz?sig=S1G, nothing ran (see http://a:b@c/d)."
    assert redact_url(text) == "was not installed from https://***@h/x.tar.gz?sig=***, nothing ran (see http://***@c/d)."
    nested: Any = {"url": "https://u:p4ss@h/x", "items": ["ftp://a:b@c/", 3], "n": None}
    assert redact_url(nested) == {"url": "https://***@h/x", "items": ["ftp://***@c/", 3], "n": None}
    assert FilterModule().filters()["redact_url"] is redact_url
