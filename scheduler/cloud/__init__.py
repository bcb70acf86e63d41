"""Cloud adapters behind Protocols: EC2, instance metadata, Ray jobs, the price catalog, the wheel nodes install."""
