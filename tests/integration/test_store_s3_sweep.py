"""S3Store's end-of-run sweep when the role may not list multipart uploads, on moto's server.

A role from before the sweep listed uploads answers ``AccessDenied``: the
products are whole, so the sweep leaves the uploads to the bucket's lifecycle
rule instead of failing a finished campaign; any other error (here, a bucket
that does not exist) is a StoreError. moto's server enforces IAM once told
to (``/moto-api/reset-auth``): the role is a real IAM user whose policy lacks
``s3:ListBucketMultipartUploads``, over real HTTP.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator

import boto3
import pytest

from scheduler.products.errors import StoreError
from scheduler.products.store import S3Store
from tests.conftest import aws_environment

pytestmark = pytest.mark.integration

BUCKET = "eochain-sweep"
#: a region no other test's client uses: the store's client cache is keyed by it
REGION = "ap-southeast-2"


def _enforce_auth(endpoint: str, after_requests: str) -> None:
    """moto's server authorises every request after ``after_requests`` ("inf": never)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth",
                                     data=after_requests.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def role_without_upload_listing(moto_endpoint: str,
                                monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The AWS variables set to an IAM user's keys that may do all on the bucket's objects
    but list its multipart uploads; IAM enforced meanwhile."""
    with aws_environment(moto_endpoint):
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_user(UserName="old-node-role")
        iam.put_user_policy(UserName="old-node-role", PolicyName="products", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow",
                           "Action": ["s3:ListBucket", "s3:GetObject", "s3:PutObject",
                                      "s3:DeleteObject", "s3:AbortMultipartUpload"],
                           "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}]}))
        keys = iam.create_access_key(UserName="old-node-role")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
        # boto3's default session keeps the keys it first resolved: the store's client
        # must come from a session that reads the role's
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        _enforce_auth(moto_endpoint, "0")
        try:
            yield
        finally:
            _enforce_auth(moto_endpoint, "inf")


def test_a_role_that_may_not_list_uploads_leaves_them_to_the_lifecycle_rule(
        moto_endpoint: str, role_without_upload_listing: None,
        caplog: pytest.LogCaptureFixture) -> None:
    store = S3Store(BUCKET, "campaign", endpoint_url=moto_endpoint, region=REGION)
    store.put_bytes("ortho/s1.json", b"{}")  # the role may write products
    with caplog.at_level(logging.WARNING):
        assert store.sweep_temps() == []
    assert "left to the bucket's lifecycle rule" in caplog.text
    assert "AccessDenied" in caplog.text
    assert store.exists("ortho/s1.json")


def test_another_listing_error_is_a_store_error(moto_endpoint: str) -> None:
    with aws_environment(moto_endpoint):
        store = S3Store("no-such-bucket", "campaign", endpoint_url=moto_endpoint,
                        region="us-east-1")
        with pytest.raises(StoreError,
                           match="s3://no-such-bucket/campaign/: cannot abort incomplete"):
            store.sweep_temps()
