"""Keys of ``rest_framework.authtoken`` (the token system before this one) become ApiTokens, stored as digests,
so clients keep their tokens across the upgrade. The old table is read with SQL because that app is no longer
installed; its rows are left where they are (no longer read by anything)."""

import hashlib
from datetime import timezone

from django.db import migrations
from django.utils.dateparse import parse_datetime

OLD_TABLE = "authtoken_token"


def copy_authtoken_keys(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return  # a fresh install: nothing to carry over
    ApiToken = apps.get_model("accounts", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {connection.ops.quote_name('key')}, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        if isinstance(created, str):  # SQLite hands raw SQL's datetimes back as text
            created = parse_datetime(created)
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        digest = hashlib.sha256(key.encode()).hexdigest()
        if ApiToken.objects.filter(digest=digest).exists():
            continue
        # No expiry: these keys never expired before, and scripts using them should not stop unannounced.
        ApiToken.objects.create(owner_id=user_id, name="Token from before the upgrade", digest=digest,
                                prefix=key[:8], created_at=created, expires_at=None)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(copy_authtoken_keys, migrations.RunPython.noop)]
