# Uploads inspected in a worker: every row has a status. Rows stored before this were inspected in the
# request, so they are ready; new rows start inspecting.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('modelhub', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='modelartifact',
            name='inspect_attempts',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='modelartifact',
            name='inspect_published_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='modelartifact',
            name='inspect_started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='modelartifact',
            name='received_files',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='modelartifact',
            name='status',
            field=models.CharField(choices=[('inspecting', 'Inspecting'), ('ready', 'Ready'), ('rejected', 'Rejected')], default='ready', max_length=16),
        ),
        migrations.AlterField(
            model_name='modelartifact',
            name='status',
            field=models.CharField(choices=[('inspecting', 'Inspecting'), ('ready', 'Ready'), ('rejected', 'Rejected')], default='inspecting', max_length=16),
        ),
        migrations.AddField(
            model_name='modelartifact',
            name='status_reason',
            field=models.TextField(blank=True),
        ),
    ]
