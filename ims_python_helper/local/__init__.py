"""The embedded local stack: an IMS-compatible server, an OAuth2 token endpoint
and a real S3 server process, all on loopback. Installed with ``pip install .[local]``.

The client package never imports it; the CLI's ``local`` commands reach it
through ``local.commands``. Modules:

- ``stack``: ``LocalStack``, the three servers started and stopped together.
- ``ims_server``: ``ImsServer``, the IMS HTTP app (router, handler, request log);
  ``ims_api`` the record operations, ``ims_schema`` the body checks per IMS
  generation, ``ims_links`` the S3 checks of links, ``ims_store`` the records on disk.
- ``vocabulary``: the IMS vocabulary the server enforces (its own copy, from ``ims-openapi.yaml``).
- ``token_server`` and ``tokens``: the OAuth2 client-credentials endpoint and its tokens.
- ``json_http``: the JSON-over-HTTP base both servers are built on.
- ``moto_s3``, ``ceph``, ``s3backend``: the S3 engines; ``s3client``: a plain boto3 client for them.
- ``tls``: the test CA and the TLS relay in front of S3; ``errors``: the stack's own errors.
"""
