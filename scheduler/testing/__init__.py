"""Test doubles (an IMDS server, local Ray clusters): for tests and benchmarks, never imported by product code."""
