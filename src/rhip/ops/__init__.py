"""Operations on a whole platform: backup, verification of a backup, restore on another machine."""

from rhip.ops.archive import BackupError, Manifest
from rhip.ops.backup import BackupPlan, create_backup
from rhip.ops.restore import restore_backup
from rhip.ops.verify import Check, VerifyResult, verify_backup

__all__ = [
    "BackupError",
    "BackupPlan",
    "Check",
    "Manifest",
    "VerifyResult",
    "create_backup",
    "restore_backup",
    "verify_backup",
]
