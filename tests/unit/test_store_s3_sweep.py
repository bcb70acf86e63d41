"""S3Store's end-of-run sweep when the role may not list multipart uploads: the run ends well.

A role from before the sweep listed uploads (or an S3-compatible server
without the call) answers ``AccessDenied``: the products are whole, so the
sweep leaves the uploads to the bucket's lifecycle rule instead of failing a
finished campaign; any other error is a StoreError. botocore's own
``Stubber`` answers for the server.
"""

from __future__ import annotations

import logging

import pytest
from botocore.stub import Stubber

from scheduler.products.errors import StoreError
from scheduler.products.store import S3Store

pytestmark = pytest.mark.unit


def _store(monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEOCHAINTEST00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    return S3Store("bucket", "campaign", endpoint_url="http://127.0.0.1:9",
                   region="eu-west-3", run_id="run-a")


def test_a_role_that_may_not_list_uploads_leaves_them_to_the_lifecycle_rule(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(monkeypatch)
    with Stubber(store.client) as stub, caplog.at_level(logging.WARNING):
        stub.add_client_error("list_multipart_uploads", service_error_code="AccessDenied",
                              http_status_code=403)
        stub.add_response("list_objects_v2", {"KeyCount": 0},
                          {"Bucket": "bucket", "Prefix": "campaign/_eochain_tmp/"})
        assert store.sweep_temps() == []
        stub.assert_no_pending_responses()
    assert "left to the bucket's lifecycle rule" in caplog.text


def test_another_listing_error_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(monkeypatch)
    with Stubber(store.client) as stub:
        stub.add_client_error("list_multipart_uploads", service_error_code="NoSuchBucket",
                              http_status_code=404)
        with pytest.raises(StoreError, match="s3://bucket/campaign/: cannot abort incomplete"):
            store.sweep_temps()
