from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_job_leases"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="tags",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="job",
            name="progress_detail",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
