"""Errors raised by the cloud side of the scheduler: one root, each also a matching builtin.

A message names the file, key or address, the bad value and what was expected.
"""

from __future__ import annotations

from scheduler.errors import SchedulerError


class CloudError(SchedulerError):
    """Root of every error raised by ``scheduler.cloud``, cluster config and job commands."""


class ClusterConfigError(CloudError, ValueError):
    """A plan or Terraform outputs cannot become a Ray cluster config."""


class TerraformOutputsError(ClusterConfigError):
    """The Terraform outputs file is unreadable or lacks values the config needs."""


class CloudApiError(CloudError, RuntimeError):
    """An AWS API call (EC2, S3) failed; the message names the call and the resource."""


class MetadataError(CloudError, OSError):
    """The instance metadata service could not be reached or answered badly."""


class JobSubmissionError(CloudError, RuntimeError):
    """A Ray job could not be submitted, found or followed."""
