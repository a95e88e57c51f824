from django.apps import AppConfig


class DatahubConfig(AppConfig):
    name = "webapp.datahub"
    label = "datahub"
    verbose_name = "Datasets"
