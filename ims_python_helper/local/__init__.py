"""The embedded local stack: an IMS-compatible server, an OAuth2 token endpoint
and a real S3 server process, all on loopback. Installed with ``pip install .[local]``.

Nothing outside this package imports it, except the CLI's ``local`` commands.
"""
