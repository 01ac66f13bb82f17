"""The clients of the services: IMS REST, S3 storage, the OAuth2 session, TLS and retries, redaction."""
