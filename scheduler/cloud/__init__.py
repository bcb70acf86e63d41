"""Cloud adapters (EC2, S3, instance metadata) behind Protocols, and the spot fallback policy."""
