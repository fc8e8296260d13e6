"""S3 object storage via the minio SDK (MinIO in production, SeaweedFS locally)."""
