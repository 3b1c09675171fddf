"""Outgoing mail: SMTP through Flask-Mail when MAIL_SERVER is set, else the log and ./var/mail."""

from __future__ import annotations

import logging
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from flask import Flask
from flask_mail import Mail, Message

log = logging.getLogger("dms.mail")


class Mailer:
    """Send one plain-text message; raises on SMTP failure so the caller can retry."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.smtp = bool(app.config.get("MAIL_SERVER"))
        self.sender = app.config.get("MAIL_DEFAULT_SENDER") or "dms@localhost"
        self.outdir = Path(app.config["DMS_VAR_DIR"]) / "mail"
        self.mail = Mail(app) if self.smtp else None

    def send(self, recipient: str, subject: str, body: str) -> None:
        """Deliver a message to `recipient`."""
        if self.mail is not None:
            with self.app.app_context():
                self.mail.send(
                    Message(subject=subject, recipients=[recipient], body=body, sender=self.sender)
                )
            log.info("mail sent to %s: %s", recipient, subject)
            return
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = subject
        message.set_content(body)
        self.outdir.mkdir(parents=True, exist_ok=True)
        path = self.outdir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))
        log.info("mail to %s written to %s: %s\n%s", recipient, path, subject, body)
