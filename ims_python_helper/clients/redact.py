"""Keep secrets out of logs, messages and output.

Two layers: every secret value the run learns (client secret, S3 keys, access
tokens) is registered and replaced wherever it appears; and patterns catch
credential-shaped text whose value was never registered (a bearer header, a
pre-signed URL's signature, a token in a JSON body).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import List, Optional

MASK = "<hidden>"

_PATTERNS = [
    # An Authorization header in any rendering: "Authorization: Bearer x", {'Authorization': b'AWS4-HMAC-SHA256 ...'}.
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)(bearer|basic|aws4-hmac-sha256)?\s*[^'\"\s,}]+[^'\"\n]*"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    (
        re.compile(
            r"(?i)([\"']?(?:access_token|refresh_token|id_token|client_secret|secret_key|"
            r"aws_secret_access_key|password|x-amz-security-token)[\"']?\s*[:=]\s*(?:b(?=['\"]))?[\"']?)[^\"'&\s,}]+"
        ),
        r"\1" + MASK,
    ),
    # Pre-signed URLs (SigV4 and SigV2) and SigV4 credential scopes, which start with the access key id.
    (re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(AWSAccessKeyId=)[^&\s\"']+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(Signature=)[^&\s\"',]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(Credential=)[^/&\s\"',]+"), r"\1" + MASK),
]


class SecretRegistry:
    """The secret values known to this process, replaced in any text passed to ``redact``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: List[str] = []

    def add(self, value: Optional[str]) -> None:
        """Remember ``value`` as a secret (short values are ignored: masking them would garble text)."""
        if not value or len(value) < 4:
            return
        with self._lock:
            if value not in self._values:
                # Longest first, so a secret that contains another is masked whole.
                self._values.append(value)
                self._values.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret and credential-shaped value masked."""
        with self._lock:
            values = list(self._values)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


SECRETS = SecretRegistry()


def redact(text: str) -> str:
    """Mask secrets in ``text`` using the process-wide registry."""
    return SECRETS.redact(text)


class RedactingFilter(logging.Filter):
    """A logging filter that renders each record once and masks secrets in the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now so the formatter cannot print it unmasked.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


#: Third-party loggers that print headers, bodies or tokens at DEBUG level.
NOISY_LOGGERS = ("urllib3", "botocore", "boto3", "s3transfer", "requests_oauthlib", "oauthlib")


class ThirdPartyFilter(logging.Filter):
    """Below DEBUG, no line of the libraries underneath reaches the user: what matters, our own lines say.

    (urllib3's retry warnings, say, are replaced by one retry line of ours; see ``retrylog``.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] not in NOISY_LOGGERS:
            return True
        return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def install_log_redaction(handler: logging.Handler) -> None:
    """Attach the redacting filter to ``handler``, keep chatty libraries at INFO or above and off the handler."""
    handler.addFilter(ThirdPartyFilter())
    handler.addFilter(RedactingFilter())
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO if name == "urllib3" else logging.WARNING)
