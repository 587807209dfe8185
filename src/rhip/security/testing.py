"""Tokens for tests and scripts: create an account in an app's database and return a bearer token.

Use from tests of any module that needs an authenticated client::

    from rhip.security.testing import issue_token
    headers = {"Authorization": f"Bearer {issue_token(app, role='platform_admin')}"}
"""

from __future__ import annotations

import secrets
from typing import Any

from rhip.security.policy import ROLES
from rhip.security.tokens import issue_token as _issue
from rhip.security.users import Account, create_account


def issue_token(
    app: Any,
    *,
    role: str = "platform_admin",
    username: str | None = None,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
    organization_id: str | None = None,
    area: str | None = None,
    scope: str | None = None,
) -> str:
    """A valid token for a new account of ``role`` on an app built with ``auth_enabled=True``."""
    runtime = app.state.security
    kind = "system" if role == "system" else "person"
    account = Account(
        username=username or f"{role}-{secrets.token_hex(4)}",
        kind=kind,
        role=role,
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        organization_id=organization_id,
        area=area,
    )
    create_account(runtime.store.engine, account, secrets.token_urlsafe(12), replace=True)
    return _issue(runtime.keys, account, scope or ROLES[role].default_scope)
