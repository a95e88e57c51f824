from django.apps import AppConfig


class ModelhubConfig(AppConfig):
    name = "webapp.modelhub"
    label = "modelhub"
    verbose_name = "Models"
